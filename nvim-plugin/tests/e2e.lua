-- End-to-end test of the plugin in a real headless Neovim, against the
-- real `banger lsp` and a real guest VM. Driven by tests/guest/nvim.rs:
--
--   nvim --headless -u NONE -i NONE --cmd 'set rtp^=nvim-plugin' -l nvim-plugin/tests/e2e.lua
--
-- with, in the environment:
--   BANGER_E2E_BANGER   the banger binary
--   BANGER_E2E_REPO     a git repository made by the Rust test (a shell test
--                       suite that fails with `src/calc.sh:2: ...`)
--   BANGER_E2E_RESULTS  where to write the results (JSON)
--   XDG_RUNTIME_DIR, XDG_STATE_HOME: the isolated banger installation
--
-- Every check is recorded in the results file as {name, ok, detail}; the
-- script exits 1 when any failed (or when a step raised an error).

local banger_bin = assert(os.getenv("BANGER_E2E_BANGER"), "BANGER_E2E_BANGER")
local repo = assert(os.getenv("BANGER_E2E_REPO"), "BANGER_E2E_REPO")
local results_path = assert(os.getenv("BANGER_E2E_RESULTS"), "BANGER_E2E_RESULTS")
local BOOT = 300000 -- ms: creating and booting a VM under emulation
local STEP = 90000

local checks = {}
local current_step = "start"

local function save_results(finished)
  local failed = 0
  for _, c in ipairs(checks) do
    if not c.ok then
      failed = failed + 1
    end
  end
  local f = assert(io.open(results_path, "w"))
  f:write(vim.json.encode({
    nvim = tostring(vim.version()),
    finished = finished,
    passed = #checks - failed,
    failed = failed,
    checks = checks,
  }))
  f:close()
end

local function log(msg)
  io.stdout:write(("[e2e %s] %s\n"):format(current_step, msg))
  io.stdout:flush()
end

--- Records a check; returns cond.
local function check(name, cond, detail)
  local ok = cond and true or false
  table.insert(checks, { step = current_step, name = name, ok = ok, detail = detail and tostring(detail) or nil })
  log((ok and "ok   " or "FAIL ") .. name .. ((not ok and detail) and (": " .. tostring(detail)) or ""))
  save_results(false)
  return ok
end

local function wait(ms, pred)
  local t0 = vim.uv.hrtime()
  local ok, code = vim.wait(ms, pred, 50)
  if not ok then
    log(("wait gave up after %.1f s (%s)"):format((vim.uv.hrtime() - t0) / 1e9, tostring(code)))
  end
  return ok
end

local function contains(lines, text)
  for _, l in ipairs(lines) do
    if l:find(text, 1, true) then
      return true
    end
  end
  return false
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end

-- Messages the plugin shows, as the user would see them.
local messages = {}
local real_notify = vim.notify
vim.notify = function(msg, level, opts)
  table.insert(messages, { msg = msg, level = level })
  log("notify: " .. tostring(msg))
  return real_notify(msg, level, opts)
end
local function messages_since(n)
  local out = {}
  for i = n + 1, #messages do
    table.insert(out, messages[i].msg)
  end
  return table.concat(out, "\n")
end

-- User events the plugin fires.
local events = {}
vim.api.nvim_create_autocmd("User", {
  pattern = { "BangerRunDone", "BangerApplyDone", "BangerCommandDone", "BangerStatus" },
  callback = function(a)
    table.insert(events, { pattern = a.match, data = a.data })
  end,
})
local function wait_event(pattern, from, ms)
  local found
  wait(ms, function()
    for i = from + 1, #events do
      if events[i].pattern == pattern then
        found = events[i]
        return true
      end
    end
    return false
  end)
  return found
end

local function step(name, f)
  current_step = name
  log("---- " .. name)
  local ok, err = xpcall(f, debug.traceback)
  if not ok then
    check("step ran without error", false, err)
  end
end

-- The plugin, as a user's config loads it.
vim.cmd("runtime! plugin/banger.lua")
local banger = require("banger")
local runs = require("banger.runs")
local blsp = require("banger.lsp")

local function client()
  return blsp.client_for_root(vim.uv.fs_realpath(repo))
end
local function state()
  local c = client()
  return c and blsp.state_for(c.id) or nil
end
local function status()
  local st = state()
  return st and st.status or nil
end

-- The output view of the run an Ex command starts.
local function start(cmd)
  local last = runs.views[#runs.views]
  local last_id = last and last.id or 0
  vim.cmd(cmd)
  local view
  wait(5000, function()
    view = runs.views[#runs.views]
    return view ~= nil and view.id > last_id
  end)
  if not view or view.id <= last_id then
    error("no output buffer for " .. cmd)
  end
  return view
end

-- Runs an Ex command that starts a run; waits for the run's end; returns
-- the run's view.
local function run_command(cmd, ms)
  local view = start(cmd)
  if not wait(ms or STEP, function()
    return view.done
  end) then
    error(cmd .. " did not finish; output so far:\n" .. table.concat(runs.lines(view), "\n"))
  end
  return view
end

local calc = repo .. "/src/calc.sh"
local calc_buf

step("setup", function()
  check("commands are defined", vim.fn.exists(":BangerExec") == 2 and vim.fn.exists(":BangerTest") == 2
    and vim.fn.exists(":BangerApply") == 2 and vim.fn.exists(":BangerSync") == 2
    and vim.fn.exists(":BangerStatus") == 2 and vim.fn.exists(":BangerStop") == 2)
  banger.setup({ cmd = banger_bin })
  vim.cmd("edit " .. vim.fn.fnameescape(calc))
  calc_buf = vim.api.nvim_get_current_buf()
  local c
  wait(60000, function()
    c = client()
    return c ~= nil and c.initialized
  end)
  check("a banger client started for the repository", c ~= nil, vim.inspect(vim.lsp.get_clients()))
  if not c then
    error("no client")
  end
  check("its command is {banger, lsp}", vim.deep_equal(c.config.cmd, { banger_bin, "lsp" }), vim.inspect(c.config.cmd))
  check("the buffer is attached", vim.lsp.buf_is_attached(calc_buf, c.id))
  -- A second file of the same repository reuses the client.
  vim.cmd("split " .. vim.fn.fnameescape(repo .. "/notes.txt"))
  local notes_buf = vim.api.nvim_get_current_buf()
  check("one client per repository", #vim.lsp.get_clients({ name = "banger" }) == 1
    and vim.lsp.buf_is_attached(notes_buf, c.id), vim.inspect(vim.lsp.get_clients({ name = "banger" })))
  vim.cmd("close")
  wait(60000, function()
    local s = status()
    return s ~= nil and s.vm == "proj"
  end)
  local s = status()
  check("banger/status names the VM it will create", s and s.vm == "proj" and s.vmState == "absent", vim.inspect(s))
  check("statusline component before the first run", banger.status() == "banger: proj absent synced", banger.status())
end)

step("exec exit code and output", function()
  local n = #messages
  local win = vim.api.nvim_get_current_win()
  local view = run_command([[BangerExec sh -c 'echo hi; exit 3']], BOOT)
  local lines = runs.lines(view)
  log("output buffer:\n" .. table.concat(lines, "\n"))
  check("the output buffer starts with the command", lines[1] == [[$ sh -c 'echo hi; exit 3']], lines[1])
  check("the output buffer shows hi", contains(lines, "hi") and lines[2] == "hi", vim.inspect(lines))
  check("the output buffer ends with the exit code", lines[#lines] == "[exit 3]", vim.inspect(lines))
  check("the exit code came from the guest", view.result and view.result.exitCode == 3, vim.inspect(view.result))
  check("the output is shown in a split", #vim.fn.win_findbuf(view.bufnr) == 1)
  check("the cursor stays in the file", vim.api.nvim_get_current_win() == win and vim.api.nvim_get_current_buf() == calc_buf)
  check("the exit code is reported", messages_since(n):find("exited 3", 1, true) ~= nil, messages_since(n))
  local s = status()
  check("the sandbox is running", s and s.vmState == "running", vim.inspect(s))
  check("statusline component", banger.status() == "banger: proj running synced", banger.status())
end)

step("exec streams output as it comes", function()
  local view = start([[BangerExec echo first; sleep 4; echo second >&2; exit 0]])
  -- (the header names both words: look at the lines after it)
  local streamed = wait(STEP, function()
    return runs.lines(view)[2] == "first"
  end)
  local lines = runs.lines(view)
  check("the first line arrived while the command ran", streamed and not view.done
    and not vim.tbl_contains(lines, "second"), vim.inspect(lines))
  check("the statusline counts the run", banger.status():find("1 running", 1, true) ~= nil, banger.status())
  wait(STEP, function()
    return view.done
  end)
  local lines = runs.lines(view)
  check("then the rest, and exit 0", vim.deep_equal(vim.list_slice(lines, 2), { "first", "second", "[exit 0]" }), vim.inspect(lines))
end)

step("exec prompts without an argument", function()
  local real_input = vim.ui.input
  local prompt
  vim.ui.input = function(opts, on_confirm)
    prompt = opts.prompt
    on_confirm("echo prompted | tr a-z A-Z")
  end
  local ok, view = pcall(run_command, "BangerExec", STEP)
  vim.ui.input = real_input
  if not ok then
    error(view)
  end
  check("vim.ui.input was asked", prompt == "banger exec: ", prompt)
  local lines = runs.lines(view)
  check("the answer ran as a shell command line", vim.deep_equal(lines, { "$ echo prompted | tr a-z A-Z", "PROMPTED", "[exit 0]" }), vim.inspect(lines))
end)

step("two commands at once each get their own output", function()
  local slow = start([[BangerExec sleep 2; echo from-slow]])
  local fast = start([[BangerExec echo from-fast; exit 4]])
  wait(STEP, function()
    return slow.done and fast.done
  end)
  check("the slow one's output", vim.deep_equal(runs.lines(slow), { "$ sleep 2; echo from-slow", "from-slow", "[exit 0]" }), vim.inspect(runs.lines(slow)))
  check("the fast one's output", vim.deep_equal(runs.lines(fast), { "$ echo from-fast; exit 4", "from-fast", "[exit 4]" }), vim.inspect(runs.lines(fast)))
end)

step("failing tests fill diagnostics and the quickfix list", function()
  local view = run_command("BangerTest", STEP)
  local lines = runs.lines(view)
  log("output buffer:\n" .. table.concat(lines, "\n"))
  check("the test output is shown", contains(lines, "src/calc.sh:2: add 2 2 gave 5, want 4"), vim.inspect(lines))
  check("the run is reported failed", lines[#lines]:match("^%[tests failed: exit 1, %d+%.%d s%]$") ~= nil, lines[#lines])
  local qf = vim.fn.getqflist({ items = 1, title = 1, winid = 1 })
  log("quickfix: " .. vim.inspect(qf))
  check("one quickfix entry", #qf.items == 1, vim.inspect(qf.items))
  local item = qf.items[1] or {}
  local file = item.bufnr and vim.api.nvim_buf_get_name(item.bufnr) or ""
  check("it names src/calc.sh", file == vim.uv.fs_realpath(calc), file)
  check("at line 2", item.lnum == 2, item.lnum)
  check("with the failure's message", (item.text or ""):find("add 2 2 gave 5, want 4", 1, true) ~= nil, item.text)
  check("as an error", item.type == "E", item.type)
  check("the quickfix window opened", (qf.winid or 0) ~= 0)
  check("its title is banger's", (qf.title or ""):find("^banger: tests failed") ~= nil, qf.title)
  local diags = vim.diagnostic.get(calc_buf)
  check("a diagnostic on the buffer, line 2", #diags == 1 and diags[1].lnum == 1 and diags[1].source == "banger"
    and diags[1].severity == vim.diagnostic.severity.ERROR, vim.inspect(diags))
end)

step("a test filter travels as one argument", function()
  local view = run_command([[BangerTest it's; echo spliced]], STEP)
  local lines = runs.lines(view)
  check("the header names the filter", lines[1] == [[$ banger test it's; echo spliced]], lines[1])
  check("the suite got it as its argument, unspliced", lines[2] == [[running 1 test (filter: it's; echo spliced)]]
    and not vim.tbl_contains(lines, "spliced"), vim.inspect(lines))
  check("the failure is still reported", #vim.fn.getqflist() == 1, vim.inspect(vim.fn.getqflist()))
end)

step("a saved fix is synced before the next run", function()
  vim.api.nvim_set_current_buf(calc_buf)
  vim.api.nvim_buf_set_lines(calc_buf, 1, 2, false, { "add() { echo $(($1 + $2)); }" })
  vim.cmd("write")
  local view = run_command("BangerTest", STEP)
  local lines = runs.lines(view)
  check("the tests pass", view.result and view.result.exitCode == 0 and lines[#lines]:find("^%[tests passed: exit 0") ~= nil, vim.inspect(lines))
  local qf = vim.fn.getqflist({ items = 1, winid = 1 })
  check("the quickfix list is empty", #qf.items == 0, vim.inspect(qf.items))
  check("the diagnostic is gone", #vim.diagnostic.get(calc_buf) == 0, vim.inspect(vim.diagnostic.get(calc_buf)))
  -- An unsaved change is not in the sandbox, and the user is told.
  vim.api.nvim_buf_set_lines(calc_buf, 0, 1, false, { "# unsaved comment" })
  local n = #messages
  local cat = run_command("BangerExec head -1 src/calc.sh", STEP)
  check("unsaved text stays on the host", runs.lines(cat)[2] == "# adds two numbers", vim.inspect(runs.lines(cat)))
  check("and the user is told", messages_since(n):find("unsaved, so not in the sandbox: src/calc.sh", 1, true) ~= nil, messages_since(n))
  vim.cmd("edit!")
  check("the buffer is unmodified again", not vim.bo[calc_buf].modified)
end)

step("a guest edit applied with :BangerApply changes the buffer", function()
  vim.cmd("edit " .. vim.fn.fnameescape(repo .. "/notes.txt"))
  local notes_buf = vim.api.nvim_get_current_buf()
  run_command([[BangerExec echo 'edited in the guest' > notes.txt]], STEP)
  local seen = wait(STEP, function()
    local s = status()
    return s and s.guestChanges == 1
  end)
  check("banger/status counts the guest change", seen, vim.inspect(status()))
  check("the statusline shows it", banger.status() == "banger: proj running synced, 1 guest change", banger.status())

  local real_select = vim.ui.select
  local asked
  local answer = "Cancel"
  vim.ui.select = function(items, opts, on_choice)
    asked = { items = items, prompt = opts.prompt }
    on_choice(answer)
  end
  local ok, err = pcall(function()
    -- Declined: nothing changes.
    local n, from = #messages, #events
    vim.cmd("BangerApply")
    check("the apply finished", wait_event("BangerApplyDone", from, STEP) ~= nil)
    check("the user was asked, with the file named", asked and vim.deep_equal(asked.items, { "Apply", "Cancel" })
      and asked.prompt:find("M notes.txt", 1, true) ~= nil, vim.inspect(asked))
    check("declined: the buffer is unchanged", vim.deep_equal(vim.api.nvim_buf_get_lines(notes_buf, 0, -1, false), { "tracked notes" }),
      vim.inspect(vim.api.nvim_buf_get_lines(notes_buf, 0, -1, false)))
    check("declined: the user is told", messages_since(n):find("declined", 1, true) ~= nil, messages_since(n))
    -- Accepted.
    answer = "Apply"
    asked = nil
    n, from = #messages, #events
    vim.cmd("BangerApply")
    check("the apply finished", wait_event("BangerApplyDone", from, STEP) ~= nil)
    local la = state().last_apply or {}
    check("through the code action", la.via == "codeAction" and la.title == "Apply guest changes (1 file)", vim.inspect(la))
    check("the buffer has the guest's text", vim.deep_equal(vim.api.nvim_buf_get_lines(notes_buf, 0, -1, false), { "edited in the guest" }),
      vim.inspect(vim.api.nvim_buf_get_lines(notes_buf, 0, -1, false)))
    check("the buffer is modified, not yet written", vim.bo[notes_buf].modified and read_file(repo .. "/notes.txt") == "tracked notes\n")
    check("the user is told", messages_since(n):find("applied 1 file from the sandbox (M notes.txt)", 1, true) ~= nil, messages_since(n))
    vim.api.nvim_set_current_buf(notes_buf)
    vim.cmd("write")
    check("written, the file has the guest's text", read_file(repo .. "/notes.txt") == "edited in the guest\n", read_file(repo .. "/notes.txt"))
    check("an undo would restore the old text", vim.fn.undotree().seq_cur > 0)
  end)
  vim.ui.select = real_select
  if not ok then
    error(err)
  end
  local gone = wait(STEP, function()
    local s = status()
    return s and s.guestChanges == 0
  end)
  check("nothing is left to apply", gone, vim.inspect(status()))
  local view = run_command("BangerExec cat notes.txt", STEP)
  check("host and guest agree", runs.lines(view)[2] == "edited in the guest", vim.inspect(runs.lines(view)))
end)

step("sync and status", function()
  local from = #events
  vim.cmd("BangerSync")
  local ev = wait_event("BangerCommandDone", from, STEP)
  check("banger.sync answered", ev and ev.data.error == nil and ev.data.result and ev.data.result.files == 0,
    ev and vim.inspect(ev.data))
  local n = #messages
  vim.cmd("BangerStatus")
  check(":BangerStatus reports the sandbox", messages_since(n):find("banger: sandbox proj is running; workspace synced; 0 guest changes", 1, true) ~= nil,
    messages_since(n))
end)

step("cancel kills the guest command", function()
  local view = start("BangerExec echo started; sleep 987")
  check("the command started", wait(STEP, function()
    return contains(runs.lines(view), "started")
  end), vim.inspect(runs.lines(view)))
  vim.cmd("BangerCancel")
  check("the run is marked cancelled", view.done and runs.lines(view)[#runs.lines(view)] == "[cancelled]", vim.inspect(runs.lines(view)))
  local gone = false
  for _ = 1, 20 do
    local ps = run_command(
      [[BangerExec for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <$f 2>/dev/null; echo; done | grep -c '^sleep 987 $' || true]],
      STEP
    )
    if runs.lines(ps)[2] == "0" then
      gone = true
      break
    end
    vim.wait(500)
  end
  check("the guest process is gone", gone)
end)

step("checkhealth banger", function()
  vim.api.nvim_set_current_buf(calc_buf)
  vim.cmd("checkhealth banger")
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  local text = table.concat(lines, "\n")
  log("checkhealth:\n" .. text)
  check("no ERROR", not text:find("ERROR", 1, true), text)
  check("the binary and its version", text:find("OK banger %d+%.%d+%.%d+ at " .. vim.pesc(banger_bin)) ~= nil, text)
  check("the daemon", text:find("OK bangerd [^\n]* running %(pid %d+%)") ~= nil, text)
  check("the repository's VM and its state", text:find("OK " .. vim.pesc(vim.uv.fs_realpath(repo)) .. " is bound to sandbox proj: running, workspace synced") ~= nil, text)
  check("the accelerator and why", text:find("accel: %a+ %(") ~= nil and text:find("it runs with accelerator %a+ %(") ~= nil, text)
  vim.cmd("close")
end)

step("help", function()
  local plugin = vim.api.nvim_get_runtime_file("doc/banger.txt", false)[1]
  check("doc/banger.txt is on the runtimepath", plugin ~= nil)
  local tmp = vim.fn.tempname()
  vim.fn.mkdir(tmp .. "/doc", "p")
  vim.fn.writefile(vim.fn.readfile(plugin), tmp .. "/doc/banger.txt")
  local ok, err = pcall(vim.cmd, "helptags " .. vim.fn.fnameescape(tmp .. "/doc"))
  check(":helptags accepts it", ok, err)
  local tags = read_file(tmp .. "/doc/tags") or ""
  for _, tag in ipairs({ "banger", "banger.txt", "banger-setup", ":BangerExec", ":BangerTest", ":BangerApply", ":BangerSync",
    ":BangerStatus", ":BangerStop", ":BangerCancel", "banger-statusline", "banger-health", "banger-settings" }) do
    check("tag " .. tag, tags:find("\n" .. vim.pesc(tag) .. "\t") ~= nil or tags:find("^" .. vim.pesc(tag) .. "\t") ~= nil)
  end
  vim.opt.rtp:prepend(tmp)
  local hok, herr = pcall(vim.cmd, "help banger")
  check(":help banger opens it", hok and vim.api.nvim_buf_get_name(0):find("banger%.txt$") ~= nil, herr)
  pcall(vim.cmd, "helpclose")
end)

step("stop", function()
  local from = #events
  vim.cmd("BangerStop")
  local ev = wait_event("BangerCommandDone", from, STEP)
  check("banger.stop answered", ev and ev.data.error == nil, ev and vim.inspect(ev.data))
  check("the status says stopped", wait(STEP, function()
    local s = status()
    return s and s.vmState == "stopped"
  end), vim.inspect(status()))
  check("statusline component", banger.status() == "banger: proj stopped synced", banger.status())
end)

current_step = "end"
save_results(true)
local failed = 0
for _, c in ipairs(checks) do
  if not c.ok then
    failed = failed + 1
  end
end
log(("%d passed, %d failed"):format(#checks - failed, failed))
for _, c in ipairs(vim.lsp.get_clients({ name = "banger" })) do
  blsp.stop_client(c)
end
vim.wait(5000, function()
  return #vim.lsp.get_clients({ name = "banger" }) == 0
end)
vim.cmd((failed == 0) and "qall!" or "cquit 1")
