-- The `banger lsp` client: one per git repository, started with
-- vim.lsp.start, plus what the plugin keeps per client (the latest
-- banger/status, output of runs, runs in flight).

local config = require("banger.config")

local M = {}

M.name = "banger"

local has_011 = vim.fn.has("nvim-0.11") == 1

--- Per-client state, by client id.
--- @type table<integer, table>
M.states = {}

-- Output of runs nobody claimed yet is kept for this many runs.
local KEEP_RUNS = 32

local function state_for(client_id)
  local st = M.states[client_id]
  if not st then
    st = {
      status = nil, -- the latest banger/status params
      runs = {}, -- runId -> { chunks = { {stream, text} }, view = view|nil }
      run_order = {}, -- runIds, oldest first
      inflight = {}, -- views waiting for their result
      last_apply = nil, -- how the last :BangerApply went
    }
    M.states[client_id] = st
  end
  return st
end
M.state_for = state_for

-- Client methods changed from `client.f(...)` (0.10) to `client:f(...)`
-- (0.11, where the old form is deprecated).
function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel_request(client, id)
  if has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

function M.stop_client(client, force)
  if has_011 then
    return client:stop(force)
  end
  return client.stop(force)
end

--- The git repository's root (work tree) of a path, resolved.
--- @param path string
--- @return string|nil
function M.repo_root(path)
  if not path or path == "" then
    return nil
  end
  local root = vim.fs.root(path, ".git")
  if not root then
    return nil
  end
  return vim.uv.fs_realpath(root) or root
end

local function is_file_buffer(bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= "" then
    return false
  end
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == "" or name:match("^%a[%w+.-]*://") then
    return false
  end
  -- Nothing inside .git.
  return not (name:find("/%.git/") or name:match("/%.git$"))
end

-- Roots found, by path (the statusline asks on every redraw).
local root_cache = {}

local function cached_root(path)
  local hit = root_cache[path]
  if hit == nil then
    hit = M.repo_root(path) or false
    root_cache[path] = hit
  end
  return hit or nil
end

--- The repository a buffer belongs to, if it is a file buffer.
function M.buffer_root(bufnr)
  if not is_file_buffer(bufnr) then
    return nil
  end
  return cached_root(vim.api.nvim_buf_get_name(bufnr))
end

--- The repository of the working directory.
function M.cwd_root()
  return cached_root(vim.fn.getcwd())
end

--- Forgets the roots found (a repository made or removed meanwhile).
function M.clear_root_cache()
  root_cache = {}
end

--- The running banger client of a repository.
--- @param root string
--- @return vim.lsp.Client|nil
function M.client_for_root(root)
  for _, client in ipairs(vim.lsp.get_clients({ name = M.name })) do
    if client.config.root_dir == root then
      return client
    end
  end
  return nil
end

local function handlers()
  local h = {}
  h["banger/status"] = function(_, params, ctx)
    local st = state_for(ctx.client_id)
    st.status = params
    vim.schedule(function()
      pcall(vim.cmd, "redrawstatus!")
      vim.api.nvim_exec_autocmds("User", {
        pattern = "BangerStatus",
        modeline = false,
        data = { client_id = ctx.client_id, status = params },
      })
    end)
  end
  h["banger/output"] = function(_, params, ctx)
    require("banger.runs").on_output(state_for(ctx.client_id), params)
  end
  h["workspace/applyEdit"] = function(err, params, ctx)
    return require("banger.apply").handle_apply_edit(err, params, ctx)
  end
  return h
end

local function client_config(root)
  return {
    name = M.name,
    cmd = config.server_cmd(),
    root_dir = root,
    workspace_folders = {
      { uri = vim.uri_from_fname(root), name = vim.fs.basename(root) },
    },
    init_options = config.server_settings(),
    handlers = handlers(),
    on_exit = function(code, signal, client_id)
      M.states[client_id] = nil
      if code ~= 0 then
        vim.schedule(function()
          vim.notify(
            ("banger: `banger lsp` for %s exited (code %d, signal %d); see :checkhealth banger and :LspLog"):format(
              root,
              code,
              signal
            ),
            vim.log.levels.WARN
          )
        end)
      end
    end,
  }
end

local function reuse(client, cfg)
  return client.name == M.name and client.config.root_dir == cfg.root_dir
end

--- Starts (or reuses) the repository's client and attaches the buffer.
--- @param bufnr integer
--- @return integer|nil client_id
function M.attach(bufnr)
  local root = M.buffer_root(bufnr)
  if not root then
    return nil
  end
  return vim.lsp.start(client_config(root), { bufnr = bufnr, reuse_client = reuse })
end

--- The client for the current buffer's repository (or the working
--- directory's), started when needed.
--- @return vim.lsp.Client|nil, string|nil error
function M.ensure_client()
  local bufnr = vim.api.nvim_get_current_buf()
  local root = M.buffer_root(bufnr)
  if root then
    local id = M.attach(bufnr)
    local client = id and vim.lsp.get_client_by_id(id)
    if client then
      return client
    end
    return nil, "banger: could not start `" .. table.concat(config.server_cmd(), " ") .. "` (see :checkhealth banger)"
  end
  root = M.cwd_root()
  if not root then
    return nil, "banger: not inside a git repository (open a file of one, or :cd into it)"
  end
  local client = M.client_for_root(root)
  if client then
    return client
  end
  local id
  if has_011 then
    id = vim.lsp.start(client_config(root), { attach = false, reuse_client = reuse })
  else
    id = vim.lsp.start_client(client_config(root))
  end
  client = id and vim.lsp.get_client_by_id(id)
  if not client then
    return nil, "banger: could not start `" .. table.concat(config.server_cmd(), " ") .. "` (see :checkhealth banger)"
  end
  return client
end

--- The client of the current buffer's (or working directory's) repository
--- if one runs; never starts one.
function M.current_client()
  local root = M.buffer_root(vim.api.nvim_get_current_buf()) or M.cwd_root()
  return root and M.client_for_root(root) or nil
end

--- Sends the current settings to every running client.
function M.push_settings()
  for _, client in ipairs(vim.lsp.get_clients({ name = M.name })) do
    M.notify(client, "workspace/didChangeConfiguration", { settings = config.server_settings() })
  end
end

--- `workspace/executeCommand`.
--- @return boolean ok, integer|nil request_id
function M.execute(client, command, arguments, on_result, bufnr)
  return M.request(client, "workspace/executeCommand", {
    command = command,
    arguments = arguments,
  }, function(err, result)
    on_result(err, result)
  end, bufnr)
end

return M
