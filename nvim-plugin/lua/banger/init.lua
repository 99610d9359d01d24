-- banger for Neovim: runs tests and commands in the repository's banger
-- sandbox through `banger lsp` (docs/lsp.md), with no other plugin.
--
--   require("banger").setup({ cmd = "banger", vm = nil, test_command = nil, ... })
--
-- See :help banger.

local config = require("banger.config")
local lsp = require("banger.lsp")
local runs = require("banger.runs")

local M = {}

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = "banger" })
end

local function fire(pattern, data)
  vim.api.nvim_exec_autocmds("User", { pattern = pattern, modeline = false, data = data })
end

local warned_missing = false

local function try_attach(bufnr)
  if not lsp.buffer_root(bufnr) then
    return
  end
  if vim.fn.executable(config.executable()) ~= 1 then
    if not warned_missing then
      warned_missing = true
      notify(
        ("banger: `%s` is not executable; the plugin stays off (setup option `cmd`, :checkhealth banger)"):format(
          config.executable()
        ),
        vim.log.levels.WARN
      )
    end
    return
  end
  local ok, err = pcall(lsp.attach, bufnr)
  if not ok then
    notify("banger: cannot start `banger lsp`: " .. tostring(err) .. " (see :checkhealth banger)", vim.log.levels.ERROR)
  end
end

--- Configures the plugin and starts the client for buffers inside git
--- repositories (one client per repository).
--- @param opts table|nil see :help banger-setup
function M.setup(opts)
  config.set(opts)
  lsp.clear_root_cache()
  local group = vim.api.nvim_create_augroup("banger", { clear = true })
  if config.options.autostart then
    vim.api.nvim_create_autocmd({ "BufReadPost", "BufNewFile" }, {
      group = group,
      callback = function(args)
        try_attach(args.buf)
      end,
    })
    for _, b in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(b) then
        try_attach(b)
      end
    end
  end
  lsp.push_settings()
  M.configured = true
end

-- Runs `f(client)` once the client is initialized.
local function with_client(f)
  local client, err = lsp.ensure_client()
  if not client then
    notify(err, vim.log.levels.ERROR)
    return
  end
  if client.initialized then
    return f(client)
  end
  local waited = 0
  local timer = assert(vim.uv.new_timer())
  timer:start(
    20,
    20,
    vim.schedule_wrap(function()
      waited = waited + 20
      if client.initialized then
        timer:stop()
        timer:close()
        f(client)
      elseif waited > 30000 or not vim.lsp.get_client_by_id(client.id) then
        timer:stop()
        timer:close()
        notify("banger: `banger lsp` did not start (see :checkhealth banger and :LspLog)", vim.log.levels.ERROR)
      end
    end)
  )
end

-- Modified buffers of the repository: written first (save_before_run), or
-- reported, as what is unsaved is not in the sandbox.
local function before_run(client)
  local root = client.config.root_dir
  local modified = {}
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(b) and vim.bo[b].modified and lsp.buffer_root(b) == root then
      table.insert(modified, b)
    end
  end
  if #modified == 0 then
    return
  end
  if config.options.save_before_run then
    for _, b in ipairs(modified) do
      vim.api.nvim_buf_call(b, function()
        vim.cmd("silent update")
      end)
    end
    return
  end
  local names = vim.tbl_map(function(b)
    return vim.fn.fnamemodify(vim.api.nvim_buf_get_name(b), ":.")
  end, modified)
  notify(
    ("banger: unsaved, so not in the sandbox: %s (:w to sync it, or set save_before_run)"):format(
      table.concat(names, ", ")
    ),
    vim.log.levels.WARN
  )
end

local function error_text(err)
  return (type(err) == "table" and err.message) or tostring(err)
end

-- Starts a run (banger.exec or banger.runTests) with its output buffer.
local function start_run(client, kind, header, command, arguments, on_done)
  before_run(client)
  local st = lsp.state_for(client.id)
  local view = runs.new(st, kind, header)
  view.client_id = client.id
  runs.show(view)
  local ok, id = lsp.execute(client, command, arguments, function(err, result)
    if view.done then
      return -- cancelled meanwhile
    end
    if err then
      view.err = err
      runs.finish(st, view, nil, "[error] " .. error_text(err), false)
      notify("banger: " .. error_text(err), vim.log.levels.ERROR)
    else
      view.result = result
      on_done(st, view, result)
    end
    fire("BangerRunDone", { view = view })
  end)
  if not ok then
    view.err = { message = "the banger client has stopped" }
    runs.finish(st, view, nil, "[error] the banger client has stopped", false)
    return view
  end
  view.request_id = id
  return view
end

--- :BangerExec {cmd}: runs the command line in the sandbox's workspace
--- (as `sh -c CMD`), streaming its output into a split.
--- @param cmdline string|nil nil or "" prompts
function M.exec(cmdline)
  if cmdline == nil or vim.trim(cmdline) == "" then
    vim.ui.input({ prompt = "banger exec: " }, function(input)
      if input and vim.trim(input) ~= "" then
        M.exec(input)
      end
    end)
    return
  end
  with_client(function(client)
    start_run(client, "exec", "$ " .. cmdline, "banger.exec", { { argv = { "sh", "-c", cmdline } } }, function(st, view, result)
      local code = result.exitCode
      runs.finish(st, view, result.runId, ("[exit %d]"):format(code), code == 0)
      notify(("banger: `%s` exited %d"):format(cmdline, code), code == 0 and vim.log.levels.INFO or vim.log.levels.WARN)
    end)
  end)
end

--- The test failures the server published (source "banger", not the
--- conflict warnings), as quickfix items.
function M.test_failures(client)
  local ns = vim.lsp.diagnostic.get_namespace(client.id)
  local diags = {}
  for _, d in ipairs(vim.diagnostic.get(nil, { namespace = ns })) do
    if d.source == "banger" and d.code ~= "guest-conflict" then
      table.insert(diags, d)
    end
  end
  local items = vim.diagnostic.toqflist(diags)
  table.sort(items, function(a, b)
    local fa, fb = vim.api.nvim_buf_get_name(a.bufnr), vim.api.nvim_buf_get_name(b.bufnr)
    if fa ~= fb then
      return fa < fb
    end
    return a.lnum < b.lnum
  end)
  return items
end

local function quickfix_is_ours()
  local title = vim.fn.getqflist({ title = 1 }).title or ""
  return title:sub(1, 7) == "banger:"
end

--- :BangerTest [name]: runs the tests; failures become diagnostics and
--- the quickfix list.
--- @param filter string|nil
function M.test(filter)
  if filter and vim.trim(filter) == "" then
    filter = nil
  end
  with_client(function(client)
    local args = filter and { { filter = filter } } or {}
    local header = "$ banger test" .. (filter and (" " .. filter) or "")
    start_run(client, "test", header, "banger.runTests", args, function(st, view, result)
      local code = result.exitCode
      local counts = {}
      if result.failed ~= nil and result.failed ~= vim.NIL then
        table.insert(counts, ("%d failed"):format(result.failed))
      end
      if result.passed ~= nil and result.passed ~= vim.NIL then
        table.insert(counts, ("%d passed"):format(result.passed))
      end
      local secs = (tonumber(result.durationMs) or 0) / 1000
      local verdict = code == 0 and "passed" or "failed"
      local summary = ("tests %s: exit %d%s, %.1f s"):format(
        verdict,
        code,
        #counts > 0 and (", " .. table.concat(counts, ", ")) or "",
        secs
      )
      runs.finish(st, view, result.runId, "[" .. summary .. "]", code == 0)
      local items = M.test_failures(client)
      local ours = quickfix_is_ours()
      local replace = ours and "r" or " "
      vim.fn.setqflist({}, replace, {
        title = ("banger: %s (%d problem%s)"):format(summary, #items, #items == 1 and "" or "s"),
        items = items,
      })
      if #items > 0 and config.options.open_quickfix then
        local win = vim.api.nvim_get_current_win()
        vim.cmd("botright copen")
        if vim.api.nvim_win_is_valid(win) then
          vim.api.nvim_set_current_win(win)
        end
      elseif #items == 0 and ours then
        vim.cmd("cclose")
      end
      notify(
        ("banger: %s%s"):format(summary, #items > 0 and (" (" .. #items .. " in the quickfix list)") or ""),
        code == 0 and vim.log.levels.INFO or vim.log.levels.WARN
      )
    end)
  end)
end

--- :BangerApply: applies the sandbox's changes to the buffers (through
--- the "Apply guest changes" code action).
function M.apply()
  with_client(function(client)
    require("banger.apply").apply(client, function(err, message)
      if err then
        notify(err, vim.log.levels.ERROR)
      else
        notify(message)
      end
      fire("BangerApplyDone", { client_id = client.id, error = err })
    end)
  end)
end

local function simple_command(command, describe)
  with_client(function(client)
    lsp.execute(client, command, {}, function(err, result)
      if err then
        notify("banger: " .. error_text(err), vim.log.levels.ERROR)
      else
        notify(describe(client, result or {}))
      end
      fire("BangerCommandDone", { command = command, client_id = client.id, error = err, result = result })
    end)
  end)
end

--- :BangerSync: a full sync of the workspace into the sandbox.
function M.sync()
  simple_command("banger.sync", function(_, r)
    local n = r.files or 0
    return ("banger: synced; %d file%s sent"):format(n, n == 1 and "" or "s")
  end)
end

--- :BangerStop: stops the repository's sandbox VM.
function M.stop()
  simple_command("banger.stop", function(client)
    local s = lsp.state_for(client.id).status
    return ("banger: sandbox %s stopped"):format(s and s.vm or "")
  end)
end

--- :BangerCancel: cancels the runs in flight ($/cancelRequest; the
--- server kills the guest process group).
function M.cancel()
  local client = lsp.current_client()
  if not client then
    return notify("banger: no banger client here", vim.log.levels.WARN)
  end
  local st = lsp.state_for(client.id)
  local n = 0
  for _, view in ipairs(vim.list_slice(st.inflight)) do
    if view.request_id then
      lsp.cancel_request(client, view.request_id)
      -- Neovim does not hand the RequestCancelled reply to the callback.
      view.cancelled = true
      runs.finish(st, view, nil, "[cancelled]", false)
      fire("BangerRunDone", { view = view })
      n = n + 1
    end
  end
  notify(n > 0 and ("banger: cancelled %d run%s"):format(n, n == 1 and "" or "s") or "banger: nothing is running")
end

--- The latest banger/status of the current buffer's repository, or nil.
function M.get_status(bufnr)
  local root = lsp.buffer_root(bufnr or vim.api.nvim_get_current_buf()) or lsp.cwd_root()
  local client = root and lsp.client_for_root(root)
  if not client then
    return nil
  end
  local st = lsp.state_for(client.id)
  return st.status, st, client
end

--- Statusline component: "banger: myrepo running synced", "banger:
--- myrepo running conflict", "banger: myrepo running synced, 2 guest
--- changes"; "" outside a banger repository.
function M.status(bufnr)
  local s, st = M.get_status(bufnr)
  if not st then
    return ""
  end
  if not s then
    return "banger: starting"
  end
  local text = ("banger: %s %s %s"):format(s.vm ~= "" and s.vm or "?", s.vmState or "?", s.sync or "?")
  local n = tonumber(s.guestChanges) or 0
  if n > 0 then
    text = text .. (", %d guest change%s"):format(n, n == 1 and "" or "s")
  end
  if #st.inflight > 0 then
    text = text .. (", %d running"):format(#st.inflight)
  end
  return text
end

--- :BangerStatus: the latest banger/status, in words.
function M.show_status()
  local s, st, client = M.get_status()
  if not client then
    return notify("banger: no banger client for this buffer (open a file of a git repository)", vim.log.levels.WARN)
  end
  if not s then
    return notify("banger: `banger lsp` for " .. client.config.root_dir .. " has not reported yet")
  end
  local n = tonumber(s.guestChanges) or 0
  local text = ("banger: sandbox %s is %s; workspace %s; %d guest change%s; last sync sent %d file%s"):format(
    s.vm,
    s.vmState,
    s.sync,
    n,
    n == 1 and "" or "s",
    tonumber(s.filesSent) or 0,
    s.filesSent == 1 and "" or "s"
  )
  if s.message and s.message ~= vim.NIL then
    text = text .. "\n" .. s.message
  end
  if #st.inflight > 0 then
    text = text .. ("\n%d run%s in progress"):format(#st.inflight, #st.inflight == 1 and "" or "s")
  end
  notify(text, s.sync == "error" and vim.log.levels.ERROR or (s.sync == "conflict" and vim.log.levels.WARN or nil))
end

return M
