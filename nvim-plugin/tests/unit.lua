-- Fast checks of the plugin's own logic, no VM (tests/guest/nvim.rs runs it
-- before the end-to-end scenario; it can also run alone):
--
--   nvim --headless -u NONE -i NONE --cmd 'set rtp^=nvim-plugin' -l nvim-plugin/tests/unit.lua
--
-- Exits 1 on the first failed check, printing it.

vim.cmd("runtime! plugin/banger.lua")
local config = require("banger.config")
local runs = require("banger.runs")
local apply = require("banger.apply")
local banger = require("banger")

local n = 0
local function eq(name, got, want)
  n = n + 1
  if not vim.deep_equal(got, want) then
    io.stdout:write(("FAIL %s\n  got:  %s\n  want: %s\n"):format(name, vim.inspect(got), vim.inspect(want)))
    vim.cmd("cquit 1")
  end
end

-- Settings map to the server's names, unset ones left out.
config.set({ path = "/opt/banger", vm = "dev", test_command = "make check", sync_on_save = false, memory = "2G", vcpu = 4, nat = true, allow = { "pypi.org" }, image = "py-dev", trusted = false })
eq("path is an alias of cmd", config.server_cmd(), { "/opt/banger", "lsp" })
eq("settings", vim.json.decode(vim.json.encode(config.server_settings())), {
  banger = { vm = "dev", testCommand = "make check", syncOnSave = false, memory = "2G", vcpu = 4, nat = true, allow = { "pypi.org" }, image = "py-dev", trusted = false },
})
config.set({ cmd = { "env", "banger" } })
eq("a command list", config.server_cmd(), { "env", "banger", "lsp" })
eq("no settings: an empty object", vim.json.encode(config.server_settings()), '{"banger":{}}')
eq("defaults", { config.options.confirm_apply, config.options.output.height, config.options.save_before_run }, { true, 12, false })
local ok, err = pcall(config.set, { vcpu = "four" })
eq("bad types are refused", ok == false and tostring(err):find("vcpu must be a number") ~= nil, true)
local ok2, err2 = pcall(config.set, { allow = { 22 } })
eq("allow rules are strings", ok2 == false and tostring(err2):find("allow must be a list of strings") ~= nil, true)
config.set({})

-- Outside a repository: no status, and the commands say why.
vim.cmd("cd /")
eq("status outside a repository", banger.status(), "")
local said = {}
local real_notify = vim.notify
vim.notify = function(msg)
  table.insert(said, msg)
end
banger.exec("true")
banger.test()
eq("commands outside a repository", said, {
  "banger: not inside a git repository (open a file of one, or :cd into it)",
  "banger: not inside a git repository (open a file of one, or :cd into it)",
})
vim.notify = real_notify

-- Output attribution.
local function state()
  return { runs = {}, run_order = {}, inflight = {} }
end
local function out(st, id, text, stream)
  runs.on_output(st, { runId = id, stream = stream or "stdout", text = text })
end
local function body(view)
  return vim.list_slice(runs.lines(view), 2)
end

-- One run at a time: streamed, partial lines joined, CRLF folded.
local st = state()
local v = runs.new(st, "exec", "$ x")
out(st, "run-1", "par")
out(st, "run-1", "tial\r\nsecond\n")
eq("streams into the one waiting run", body(v), { "partial", "second", "" })
out(st, "run-1", "oops\n", "stderr")
runs.finish(st, v, "run-1", "[exit 1]", false)
eq("finished", body(v), { "partial", "second", "oops", "[exit 1]" })
eq("its output is forgotten", st.runs["run-1"], nil)

-- Two at once: nothing is guessed; each result takes its own run's output.
st = state()
local a = runs.new(st, "exec", "$ a")
local b = runs.new(st, "exec", "$ b")
out(st, "run-7", "from b\n")
out(st, "run-6", "from a\n")
eq("not streamed while ambiguous", { body(a), body(b) }, { { "" }, { "" } })
runs.finish(st, b, "run-7", "[exit 0]", true)
runs.finish(st, a, "run-6", "[exit 0]", true)
eq("each gets its own", { body(a), body(b) }, { { "from a", "[exit 0]" }, { "from b", "[exit 0]" } })

-- Someone else's run claimed by mistake is given back at the result.
st = state()
a = runs.new(st, "exec", "$ a")
out(st, "run-2", "not mine\n") -- a run started elsewhere (another client command)
out(st, "run-3", "mine\n")
eq("streamed the wrong run for a moment", body(a), { "not mine", "" })
runs.finish(st, a, "run-3", "[exit 0]", true)
eq("rebuilt from its own run", body(a), { "mine", "[exit 0]" })
eq("the other run is kept for its owner", st.runs["run-2"] ~= nil and st.runs["run-2"].view == nil, true)
b = runs.new(st, "exec", "$ b")
runs.finish(st, b, "run-2", "[exit 5]", false)
eq("and shown when its result comes", body(b), { "not mine", "[exit 5]" })

-- A cancelled run ignores late output.
st = state()
a = runs.new(st, "exec", "$ sleep")
out(st, "run-9", "started\n")
runs.finish(st, a, nil, "[cancelled]", false)
out(st, "run-9", "late\n")
eq("no output after the end", body(a), { "started", "[cancelled]" })

-- What an edit does, in words.
local root = "/repo"
eq("describe", apply.describe({
  documentChanges = {
    { kind = "create", uri = "file:///repo/new.txt" },
    { textDocument = { uri = "file:///repo/new.txt" }, edits = {} },
    { textDocument = { uri = "file:///repo/src/a.sh", version = 3 }, edits = {} },
    { kind = "delete", uri = "file:///repo/gone.txt" },
  },
}, root), { "A new.txt", "M src/a.sh", "D gone.txt" })

-- :checkhealth with no banger binary: an error, with what to do.
config.set({ cmd = "/nonexistent/banger" })
vim.cmd("checkhealth banger")
local text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
eq("health names the missing binary", text:find("ERROR `/nonexistent/banger` is not found", 1, true) ~= nil, true)
eq("and what to do", text:find("put it on $PATH", 1, true) ~= nil, true)
config.set({})

io.stdout:write(("unit: %d checks passed\n"):format(n))
vim.cmd("qall!")
