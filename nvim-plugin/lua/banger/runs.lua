-- Runs of guest commands (:BangerExec, :BangerTest) and the scratch
-- buffers their output streams into.
--
-- `banger/output` notifications name their run by `runId`, but a run's id
-- is only known from the command's result, which arrives after all its
-- output. So output is kept by runId; a run first seen while exactly one
-- of this client's runs is waiting for its id is streamed live into that
-- run's buffer; and when a result arrives, the buffer is rebuilt from the
-- output of the run it names if it was streaming another (or nothing).
-- With one command at a time output streams live; with several at once
-- each buffer may fill only when its result arrives, but always with its
-- own run's output.

local config = require("banger.config")

local M = {}

local ns = vim.api.nvim_create_namespace("banger-output")
local counter = 0
-- Recent views, oldest first.
M.views = {}
local KEEP_VIEWS = 8
local KEEP_RUNS = 32

local function set_default_highlights()
  vim.api.nvim_set_hl(0, "BangerOutputHeader", { default = true, link = "Title" })
  vim.api.nvim_set_hl(0, "BangerOutputStderr", { default = true, link = "WarningMsg" })
  vim.api.nvim_set_hl(0, "BangerOutputOk", { default = true, link = "DiagnosticOk" })
  vim.api.nvim_set_hl(0, "BangerOutputFailed", { default = true, link = "DiagnosticError" })
end
set_default_highlights()
vim.api.nvim_create_autocmd("ColorScheme", {
  group = vim.api.nvim_create_augroup("banger-output-hl", { clear = true }),
  callback = set_default_highlights,
})

local function valid(view)
  return view.bufnr and vim.api.nvim_buf_is_valid(view.bufnr)
end

local function with_modifiable(bufnr, f)
  vim.bo[bufnr].modifiable = true
  local ok, err = pcall(f)
  vim.bo[bufnr].modifiable = false
  if not ok then
    error(err)
  end
end

-- Keeps windows that show the buffer (other than the current one, which
-- the user may be reading) on its last line.
local function follow(view)
  local last = vim.api.nvim_buf_line_count(view.bufnr)
  local current = vim.api.nvim_get_current_win()
  for _, win in ipairs(vim.fn.win_findbuf(view.bufnr)) do
    if win ~= current then
      pcall(vim.api.nvim_win_set_cursor, win, { last, 0 })
    end
  end
end

-- Deletes old finished output buffers no window shows.
local function prune()
  while #M.views > KEEP_VIEWS do
    local old = M.views[1]
    if not old.done then
      break
    end
    table.remove(M.views, 1)
    if valid(old) and #vim.fn.win_findbuf(old.bufnr) == 0 then
      pcall(vim.api.nvim_buf_delete, old.bufnr, { force = true })
    end
  end
end

--- Appends output text (which may end mid-line) to a view.
local function append(view, stream, text)
  if not valid(view) or text == "" then
    return
  end
  text = text:gsub("\r\n", "\n")
  local parts = vim.split(text, "\n", { plain = true })
  local buf = view.bufnr
  with_modifiable(buf, function()
    local n = vim.api.nvim_buf_line_count(buf)
    local last = vim.api.nvim_buf_get_lines(buf, n - 1, n, false)[1] or ""
    local lines = vim.list_slice(parts, 2)
    vim.api.nvim_buf_set_lines(buf, n - 1, n, false, { last .. parts[1] })
    vim.api.nvim_buf_set_lines(buf, n, n, false, lines)
    if stream == "stderr" then
      local first, final = n - 1, n - 1 + #lines
      if parts[#parts] == "" and #lines > 0 then
        final = final - 1 -- the new open line has no stderr text yet
      end
      for row = first, final do
        vim.api.nvim_buf_set_extmark(buf, ns, row, 0, {
          end_row = row + 1,
          end_col = 0,
          hl_group = "BangerOutputStderr",
          strict = false,
        })
      end
    end
  end)
  follow(view)
end

local function reset(view)
  if not valid(view) then
    return
  end
  with_modifiable(view.bufnr, function()
    vim.api.nvim_buf_clear_namespace(view.bufnr, ns, 1, -1)
    vim.api.nvim_buf_set_lines(view.bufnr, 1, -1, false, { "" })
  end)
end

--- Shows a view's buffer in the output split (reused when one is open in
--- this tab page), keeping the cursor where it was.
function M.show(view)
  if not config.options.output.open or not valid(view) then
    return
  end
  for _, win in ipairs(vim.api.nvim_tabpage_list_wins(0)) do
    local b = vim.api.nvim_win_get_buf(win)
    if vim.b[b].banger_output then
      vim.api.nvim_win_set_buf(win, view.bufnr)
      follow(view)
      return win
    end
  end
  -- A full-width split at the bottom (win = -1), not entered.
  local win = vim.api.nvim_open_win(view.bufnr, false, {
    split = "below",
    win = -1,
    height = config.options.output.height or 12,
  })
  vim.wo[win].winfixheight = true
  vim.wo[win].number = false
  vim.wo[win].relativenumber = false
  vim.wo[win].signcolumn = "no"
  vim.wo[win].wrap = true
  follow(view)
  return win
end

--- A new run waiting for its result, with its output buffer.
--- @param st table the client's state
--- @param kind string "exec" or "test"
--- @param header string the first line ("$ command")
function M.new(st, kind, header)
  counter = counter + 1
  local buf = vim.api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = "hide"
  vim.bo[buf].swapfile = false
  pcall(vim.api.nvim_buf_set_name, buf, ("banger://%s/%d"):format(kind, counter))
  vim.b[buf].banger_output = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { header, "" })
  vim.api.nvim_buf_set_extmark(buf, ns, 0, 0, { end_row = 1, end_col = 0, hl_group = "BangerOutputHeader", strict = false })
  vim.bo[buf].modifiable = false
  vim.bo[buf].filetype = "bangeroutput"
  local view = {
    id = counter,
    kind = kind,
    header = header,
    bufnr = buf,
    run_id = nil, -- the run whose output this buffer streams
    done = false,
    result = nil,
    err = nil,
    request_id = nil,
  }
  table.insert(st.inflight, view)
  table.insert(M.views, view)
  prune()
  return view
end

local function forget_run(st, run_id)
  st.runs[run_id] = nil
  for i, id in ipairs(st.run_order) do
    if id == run_id then
      table.remove(st.run_order, i)
      break
    end
  end
end

--- Handles `banger/output`.
function M.on_output(st, params)
  local id = params.runId
  if type(id) ~= "string" or type(params.text) ~= "string" then
    return
  end
  local run = st.runs[id]
  if not run then
    run = { chunks = {}, view = nil }
    st.runs[id] = run
    table.insert(st.run_order, id)
    local waiting = {}
    for _, v in ipairs(st.inflight) do
      if not v.run_id then
        table.insert(waiting, v)
      end
    end
    if #waiting == 1 then
      run.view = waiting[1]
      waiting[1].run_id = id
    end
    -- Forget the oldest output nobody claimed.
    local i = 1
    while #st.run_order > KEEP_RUNS and i <= #st.run_order do
      local old = st.run_order[i]
      if st.runs[old] and not st.runs[old].view then
        forget_run(st, old)
      else
        i = i + 1
      end
    end
  end
  table.insert(run.chunks, { params.stream, params.text })
  if run.view and not run.view.done then
    append(run.view, params.stream, params.text)
  end
end

--- Ends a run: `result_run_id` is the run the result names (nil when the
--- command failed or was cancelled); `last` is the closing line and
--- `ok` whether it reports success.
function M.finish(st, view, result_run_id, last, ok)
  for i, v in ipairs(st.inflight) do
    if v == view then
      table.remove(st.inflight, i)
      break
    end
  end
  if result_run_id and view.run_id ~= result_run_id then
    -- It streamed another run (or none): give that one back, and show
    -- the output of the run the result names.
    if view.run_id and st.runs[view.run_id] then
      st.runs[view.run_id].view = nil
    end
    reset(view)
    local run = st.runs[result_run_id]
    for _, chunk in ipairs(run and run.chunks or {}) do
      append(view, chunk[1], chunk[2])
    end
  end
  local own = result_run_id or view.run_id
  if own then
    forget_run(st, own)
  end
  view.run_id = own
  view.done = true
  if valid(view) then
    with_modifiable(view.bufnr, function()
      local n = vim.api.nvim_buf_line_count(view.bufnr)
      local tail = vim.api.nvim_buf_get_lines(view.bufnr, n - 1, n, false)[1]
      local row = n - 1
      if tail == "" then
        vim.api.nvim_buf_set_lines(view.bufnr, n - 1, n, false, { last })
      else
        vim.api.nvim_buf_set_lines(view.bufnr, n, n, false, { last })
        row = n
      end
      vim.api.nvim_buf_set_extmark(view.bufnr, ns, row, 0, {
        end_row = row + 1,
        end_col = 0,
        hl_group = ok and "BangerOutputOk" or "BangerOutputFailed",
        strict = false,
      })
    end)
    follow(view)
  end
end

--- The text of a view's buffer (for tests and callers).
function M.lines(view)
  if not valid(view) then
    return {}
  end
  return vim.api.nvim_buf_get_lines(view.bufnr, 0, -1, false)
end

return M
