-- The plugin's options: defaults, validation, and the `banger lsp`
-- settings (`initializationOptions`) they map to.

local M = {}

M.defaults = {
  -- The banger executable: a name on $PATH, a path, or a command list
  -- (`{ "banger" }`); `path` is accepted as an alias.
  cmd = "banger",
  -- Start the client for buffers inside a git repository.
  autostart = true,

  -- banger.* settings (docs/lsp.md); nil leaves the server's default or
  -- the repository's `.banger.toml`.
  vm = nil, -- banger.vm
  test_command = nil, -- banger.testCommand
  sync_on_save = nil, -- banger.syncOnSave (server default: true)
  vcpu = nil, -- banger.vcpu
  memory = nil, -- banger.memory: MiB (2048) or a size ("2G")
  nat = nil, -- banger.nat: outbound network access for a VM it creates
  allow = nil, -- banger.allow: only these destinations ({ "pypi.org", "*.pythonhosted.org" })
  image = nil, -- banger.image: the image a VM it creates boots
  trusted = nil, -- banger.trusted (server default: true)

  -- Write modified buffers of the repository before :BangerExec and
  -- :BangerTest (otherwise unsaved changes are reported, not synced).
  save_before_run = false,
  -- Ask before applying guest changes (the server marks its edit
  -- "needsConfirmation").
  confirm_apply = true,
  -- Open the quickfix window when a test run reports failures.
  open_quickfix = true,
  output = {
    -- Show command and test output in a split as it streams.
    open = true,
    height = 12,
  },
}

M.options = vim.deepcopy(M.defaults)

--- Merges user options over the defaults.
--- @param opts table|nil
function M.set(opts)
  opts = opts or {}
  local types = {
    cmd = { "string", "table" },
    path = { "string" },
    vm = { "string" },
    test_command = { "string" },
    sync_on_save = { "boolean" },
    vcpu = { "number" },
    memory = { "number", "string" },
    nat = { "boolean" },
    allow = { "table" },
    image = { "string" },
    trusted = { "boolean" },
    output = { "table" },
  }
  for key, allowed in pairs(types) do
    local v = opts[key]
    if v ~= nil and not vim.tbl_contains(allowed, type(v)) then
      error(
        ("banger.setup: %s must be a %s, not a %s"):format(key, table.concat(allowed, " or "), type(v)),
        2
      )
    end
  end
  if opts.allow ~= nil then
    for _, rule in ipairs(opts.allow) do
      if type(rule) ~= "string" then
        error("banger.setup: allow must be a list of strings (HOST, HOST:PORT or *.DOMAIN)", 2)
      end
    end
  end
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  if opts.path and not opts.cmd then
    merged.cmd = opts.path
  end
  merged.path = nil
  M.options = merged
  return merged
end

--- The command that starts the server: `{ banger, "lsp" }`.
function M.server_cmd()
  local cmd = M.options.cmd
  if type(cmd) == "string" then
    return { cmd, "lsp" }
  end
  local out = vim.deepcopy(cmd)
  table.insert(out, "lsp")
  return out
end

--- The banger executable alone (for :checkhealth).
function M.executable()
  local cmd = M.options.cmd
  if type(cmd) == "table" then
    return cmd[1]
  end
  return cmd
end

--- `initializationOptions` / `didChangeConfiguration` settings.
function M.server_settings()
  local o = M.options
  local s = {}
  s.vm = o.vm
  s.testCommand = o.test_command
  s.syncOnSave = o.sync_on_save
  s.vcpu = o.vcpu
  s.memory = o.memory
  s.nat = o.nat
  s.allow = o.allow
  s.image = o.image
  s.trusted = o.trusted
  if vim.tbl_isempty(s) then
    s = vim.empty_dict()
  end
  return { banger = s }
end

return M
