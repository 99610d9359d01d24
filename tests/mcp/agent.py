"""An agent's session with `banger mcp`, driven by the official MCP Python
SDK (`mcp` from PyPI): a client nobody at banger wrote.

    agent.py offline BANGER REPO SNAPSHOT   tools/list, schemas, bad input (no VM)
    agent.py session BANGER REPO SNAPSHOT   a sandbox from create to apply_changes
    agent.py ephemeral BANGER REPO NAME     an --ephemeral server's sandbox goes with it
    agent.py http SOCKET                    the streamable HTTP transport on a unix socket

Each step prints one line; a failed check raises (exit code 1). The
banger commands get this process's environment (the test's XDG dirs).
"""

import json
import os
import subprocess
import sys

import anyio
import httpx2
import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "sandbox_create", "sandbox_list", "sandbox_delete", "sandbox_stop", "exec",
    "read_file", "write_file", "list_files", "search_files", "sync", "changes",
    "apply_changes", "ports", "run_tests",
}
BOOT = 600  # seconds a sandbox_create may take (TCG, a cold cache)


def step(what, **facts):
    print(json.dumps({"step": what, **facts}), flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def text(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def call(s, tool, args, ok=True, **kw):
    r = await s.call_tool(tool, args, **kw)
    if ok:
        check(not r.is_error, f"{tool} {args}: {text(r)}")
    return r


async def refused(s, tool, args, why):
    """A tool error (isError) whose message says `why`; never a crash."""
    r = await s.call_tool(tool, args)
    check(r.is_error, f"{tool} {args} was not refused: {r.structured_content}")
    check(why in text(r), f"{tool} {args}: {text(r)!r} does not say {why!r}")
    step("refused", tool=tool, args=args, message=text(r))


def server(banger, repo, *extra):
    return StdioServerParameters(
        command=banger, args=["mcp", "--repo", repo, *extra], env=dict(os.environ)
    )


async def check_tools(s, snapshot, read_only=False):
    listed = (await s.list_tools()).tools
    names = {t.name for t in listed}
    want = TOOLS - {"apply_changes"} if read_only else TOOLS
    check(names == want, f"tools/list gave {sorted(names)}")
    snap = {t["name"]: t for t in json.load(open(snapshot))}
    for t in listed:
        # Every schema is a valid JSON Schema (2020-12, as they declare).
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
        check(t.output_schema is not None, f"{t.name} has no outputSchema")
        jsonschema.Draft202012Validator.check_schema(t.output_schema)
        check(t.description, f"{t.name} has no description")
        # What the wire carries is the committed snapshot.
        check(t.input_schema == snap[t.name]["inputSchema"], f"{t.name} inputSchema differs from the snapshot")
        check(t.output_schema == snap[t.name]["outputSchema"], f"{t.name} outputSchema differs from the snapshot")
        check(t.description == snap[t.name]["description"], f"{t.name} description differs from the snapshot")
    step("tools", names=sorted(names))


async def offline(banger, repo, snapshot):
    async with stdio_client(server(banger, repo)) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        await check_tools(s, snapshot)
        lst = await call(s, "sandbox_list", {})
        check(lst.structured_content["sandboxes"] == [], "a fresh repository has sandboxes")
        check(os.path.samefile(lst.structured_content["repo"], repo), "sandbox_list names another repo")
        await refused(s, "read_file", {"sandbox": "x", "path": "../secret"}, "leaves the workspace")
        await refused(s, "write_file", {"sandbox": "x", "path": "/etc/passwd", "content": ""}, "is absolute")
        await refused(s, "write_file", {"sandbox": "x", "path": ".git/hooks/pre-commit", "content": ""}, "under .git")
        await refused(s, "exec", {"sandbox": "x"}, "give argv")
        await refused(s, "exec", {"sandbox": "x", "argv": ["true"], "command": "true"}, "not both")
        await refused(s, "exec", {"sandbox": "x", "command": "true", "timeout_secs": 999999}, "timeout_secs is at most")
        await refused(s, "exec", {"sandbox": "no-such-sandbox", "command": "true"}, "no sandbox named")
        await refused(s, "sandbox_create", {"repo": "/"}, "")
        await refused(s, "sandbox_create", {"allow": ["not a host!"]}, "allow")
        await refused(s, "sandbox_create", {"image": "no-such-image"}, "no-such-image")
        # Malformed arguments: an error answer, and the server goes on.
        for bad in ({"sandbox": 5}, {"sandbox": "x", "argv": "not-a-list"}, {"sandbox": "x", "bogus": 1}):
            try:
                r = await s.call_tool("exec", bad)
                check(r.is_error, f"exec {bad} was accepted")
            except Exception as e:  # a JSON-RPC error is fine too
                step("malformed", args=str(bad), error=str(e)[:200])
        try:
            r = await s.call_tool("no_such_tool", {})
            check(r.is_error, "an unknown tool was accepted")
        except Exception as e:
            step("unknown tool", error=str(e)[:200])
        await call(s, "sandbox_list", {})
        step("survived malformed calls")
    async with stdio_client(server(banger, repo, "--read-only-host")) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        await check_tools(s, snapshot, read_only=True)


async def session(banger, repo, snapshot, name):
    progress = []
    values = []

    async def on_progress(p, total, message):
        progress.append(message or "")
        values.append(p)

    async with stdio_client(server(banger, repo)) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        await check_tools(s, snapshot)

        # A create cancelled while it starts the VM leaves nothing (its lease
        # ends). It is cancelled on its first report of the VM's start (the
        # VM exists by then; its network, boot or restore and workspace are
        # still to come), not after a fixed time, which a restore from a
        # snapshot now beats.
        midway = anyio.Event()

        async def on_create_progress(p, total, message):
            if any(w in (message or "") for w in ("boot", "network", "qemu", "restor")):
                midway.set()

        async def cancelled_create():
            await s.call_tool("sandbox_create", {"name": name + "-cancelled"}, read_timeout_seconds=BOOT,
                              progress_callback=on_create_progress)
            raise AssertionError("the cancelled create finished")

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancelled_create)
            with anyio.fail_after(BOOT):
                await midway.wait()
            tg.cancel_scope.cancel()
        for _ in range(120):
            vms = json.loads(subprocess.run([banger, "vm", "list", "--all", "--json"], capture_output=True,
                                            check=True, text=True).stdout)
            if not any(v["name"] == name + "-cancelled" for v in vms):
                break
            await anyio.sleep(0.5)
        check(not any(v["name"] == name + "-cancelled" for v in vms), "a cancelled create left its VM")
        step("cancelled create left nothing")

        # A sandbox of the repository.
        r = await call(s, "sandbox_create", {"name": name}, read_timeout_seconds=BOOT, progress_callback=on_progress)
        check(r.structured_content["name"] == name, "sandbox_create named another sandbox")
        check(r.structured_content["sandbox"]["state"] == "running", "the sandbox is not running")
        check(any("creating sandbox" in m for m in progress), f"no progress while creating: {progress}")
        check(all(a < b for a, b in zip(values, values[1:])), f"progress did not increase: {values}")
        step("created", name=name, files=r.structured_content["files"], progress=len(progress))
        lst = (await call(s, "sandbox_list", {})).structured_content["sandboxes"]
        check([x["name"] for x in lst] == [name], f"sandbox_list: {lst}")

        # Its failing test, with the failure's place.
        r = await call(s, "run_tests", {"sandbox": name}, read_timeout_seconds=300)
        t = r.structured_content
        check(t["exit_code"] != 0, f"the failing test passed: {t}")
        check(t["failed"] == 1 and t["passed"] == 1, f"counts: {t}")
        places = [(f["file"], f["line"]) for f in t["failures"]]
        check(("tests/test_calc.py", 8) in places, f"failures: {t['failures']}")
        step("tests failed", exit_code=t["exit_code"], failures=t["failures"])

        # exec: exit codes, streams, stdin, cwd, env, output as progress.
        r = await call(s, "exec", {"sandbox": name, "argv": ["sh", "-c", "echo out; echo err >&2; exit 7"]})
        e = r.structured_content
        check((e["exit_code"], e["stdout"], e["stderr"]) == (7, "out\n", "err\n"), f"exec: {e}")
        r = await call(s, "exec", {"sandbox": name, "command": "cat; echo \"$GREETING\"; pwd", "stdin": "from stdin\n",
                                   "env": {"GREETING": "hi"}, "cwd": "tests"})
        check(r.structured_content["stdout"] == "from stdin\nhi\n/root/repo/tests\n", f"exec: {r.structured_content}")
        progress.clear()
        values.clear()
        r = await call(s, "exec", {"sandbox": name, "command": "for i in 1 2 3; do echo line$i; sleep 0.3; done"},
                       progress_callback=on_progress)
        check("line1" in "".join(progress), f"no output streamed as progress: {progress}")
        check(all(a < b for a, b in zip(values, values[1:])), f"progress did not increase: {values}")
        step("exec", streamed=progress)
        r = await call(s, "exec", {"sandbox": name, "command": "sleep 30", "timeout_secs": 1})
        check(r.structured_content["timed_out"] and r.structured_content["exit_code"] == 137, f"timeout: {r.structured_content}")
        step("timeout killed the command")

        # A cancelled exec kills the guest command.
        with anyio.move_on_after(4):
            await s.call_tool("exec", {"sandbox": name, "command": "echo $$ > /tmp/sleeper.pid; exec sleep 300"})
            raise AssertionError("the sleeper returned")
        for _ in range(40):
            r = await call(s, "exec", {"sandbox": name, "command": "kill -0 $(cat /tmp/sleeper.pid)"})
            if r.structured_content["exit_code"] != 0:
                break
            await anyio.sleep(0.5)
        check(r.structured_content["exit_code"] != 0, "the cancelled command still runs in the guest")
        step("cancel killed the command")

        # Files.
        r = await call(s, "read_file", {"sandbox": name, "path": "calc.py"})
        check("a + b + 1" in r.structured_content["content"], f"read_file: {r.structured_content}")
        r = await call(s, "read_file", {"sandbox": name, "path": "calc.py", "max_bytes": 5})
        check(r.structured_content["content"] == "def a" and r.structured_content["truncated"], f"read_file max: {r.structured_content}")
        r = await call(s, "list_files", {"sandbox": name, "depth": 2})
        paths = {x["path"]: x["kind"] for x in r.structured_content["entries"]}
        check(paths.get("calc.py") == "file" and paths.get("tests") == "dir" and "tests/test_calc.py" in paths
              and not any(p == ".git" or p.startswith(".git/") for p in paths), f"list_files: {paths}")
        r = await call(s, "search_files", {"sandbox": name, "pattern": "assertEqual(add"})
        m = r.structured_content["matches"]
        check([(x["path"], x["line"]) for x in m] == [("tests/test_calc.py", 8)], f"search_files: {m}")

        # Hostile paths: out of the workspace by name or by a guest link.
        await call(s, "exec", {"sandbox": name, "command": "ln -s /etc etc-link && ln -s /etc/hostname host-link"})
        await refused(s, "read_file", {"sandbox": name, "path": "host-link"}, "outside the workspace")
        await refused(s, "write_file", {"sandbox": name, "path": "etc-link/evil", "content": "x"}, "outside the workspace")
        await refused(s, "list_files", {"sandbox": name, "path": "etc-link"}, "outside the workspace")
        await refused(s, "search_files", {"sandbox": name, "pattern": "root", "path": "etc-link"}, "outside the workspace")
        await refused(s, "read_file", {"sandbox": name, "path": "../../etc/passwd"}, "leaves the workspace")
        await refused(s, "exec", {"sandbox": name, "command": "pwd", "cwd": "../.."}, "leaves the workspace")
        r = await call(s, "exec", {"sandbox": name, "command": "test -e /etc/evil"})
        check(r.structured_content["exit_code"] == 1, "write_file wrote through a link out of the workspace")
        await call(s, "exec", {"sandbox": name, "command": "rm etc-link host-link"})

        # The fix, written in the guest; the tests pass there.
        fixed = open(os.path.join(repo, "calc.py")).read().replace("a + b + 1", "a + b")
        r = await call(s, "write_file", {"sandbox": name, "path": "calc.py", "content": fixed})
        check(r.structured_content["bytes"] == len(fixed.encode()), f"write_file: {r.structured_content}")
        r = await call(s, "changes", {"sandbox": name})
        c = r.structured_content
        check([(f["path"], f["status"]) for f in c["files"]] == [("calc.py", "modified")], f"changes: {c}")
        d = c["files"][0]["diff"]
        check("-    return a + b + 1\n+    return a + b\n" in d and d.startswith("--- a/calc.py\n+++ b/calc.py\n"), f"diff: {d}")
        step("changes", diff=d)
        # A sync keeps the guest's edit (the host still has the bug).
        r = await call(s, "sync", {"sandbox": name})
        check(r.structured_content["conflicts"] == ["calc.py"] or r.structured_content["files_sent"] == 0,
              f"sync: {r.structured_content}")
        r = await call(s, "run_tests", {"sandbox": name}, read_timeout_seconds=300)
        t = r.structured_content
        check(t["exit_code"] == 0 and t["failures"] == [] and t["passed"] == 2, f"the fixed tests: {t}")
        step("tests passed", exit_code=t["exit_code"])

        # Home: first what would change, then the change.
        r = await call(s, "apply_changes", {"sandbox": name, "dry_run": True})
        check(r.structured_content == {"applied": False, "files": ["calc.py"], "repo": r.structured_content["repo"]},
              f"dry run: {r.structured_content}")
        check("a + b + 1" in open(os.path.join(repo, "calc.py")).read(), "the dry run wrote to the host")
        r = await call(s, "apply_changes", {"sandbox": name})
        check(r.structured_content["applied"] and r.structured_content["files"] == ["calc.py"], f"apply: {r.structured_content}")
        check(open(os.path.join(repo, "calc.py")).read() == fixed, "the host does not have the fix")
        r = await call(s, "changes", {"sandbox": name})
        check(r.structured_content["files"] == [], f"changes after apply: {r.structured_content}")
        step("applied", files=["calc.py"])

        r = await call(s, "ports", {"sandbox": name})
        check(isinstance(r.structured_content["ports"], list), "ports")
        r = await call(s, "sandbox_stop", {"sandbox": name})
        check(r.structured_content["state"] == "stopped", f"stop: {r.structured_content}")
        await refused(s, "exec", {"sandbox": name, "command": "true"}, "must be running")
        await call(s, "sandbox_delete", {"sandbox": name})
        lst = (await call(s, "sandbox_list", {})).structured_content["sandboxes"]
        check(lst == [], f"after delete: {lst}")
        step("deleted")


async def ephemeral(banger, repo, name):
    """A sandbox of an --ephemeral server goes when the server ends."""
    async with stdio_client(server(banger, repo, "--ephemeral")) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        r = await call(s, "sandbox_create", {"name": name}, read_timeout_seconds=BOOT)
        check(any("ephemeral" in n for n in r.structured_content["notes"]), f"notes: {r.structured_content}")
        r = await call(s, "exec", {"sandbox": name, "command": "true"})
        check(r.structured_content["exit_code"] == 0, "exec in the ephemeral sandbox")
    step("server ended")

    def listed():
        out = subprocess.run([banger, "vm", "list", "--all", "--json"], capture_output=True, check=True, text=True)
        return any(v["name"] == name for v in json.loads(out.stdout))

    for _ in range(120):
        if not listed():
            break
        await anyio.sleep(0.5)
    check(not listed(), "the ephemeral server's sandbox outlived it")
    step("ephemeral sandbox removed")


async def http(socket_path):
    client = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=socket_path), timeout=60)
    async with client, streamable_http_client("http://localhost/mcp", http_client=client) as (r, w, *_), \
            ClientSession(r, w) as s:
        await s.initialize()
        names = {t.name for t in (await s.list_tools()).tools}
        check(names == TOOLS, f"tools/list over http: {sorted(names)}")
        r = await call(s, "sandbox_list", {})
        check(r.structured_content["sandboxes"] == [], "sandbox_list over http")
        await refused(s, "read_file", {"sandbox": "x", "path": "../x"}, "leaves the workspace")
        step("http", tools=len(names))


def main():
    mode, *args = sys.argv[1:]
    if mode == "offline":
        anyio.run(offline, *args)
    elif mode == "session":
        anyio.run(session, *args)
    elif mode == "ephemeral":
        anyio.run(ephemeral, *args)
    elif mode == "http":
        anyio.run(http, *args)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
