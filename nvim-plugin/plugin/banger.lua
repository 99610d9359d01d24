-- banger: commands. The client starts with require("banger").setup().
if vim.g.loaded_banger then
  return
end
vim.g.loaded_banger = true

if vim.fn.has("nvim-0.10") ~= 1 then
  vim.notify("banger.nvim needs Neovim 0.10 or later", vim.log.levels.ERROR)
  return
end

local function banger()
  return require("banger")
end

local command = vim.api.nvim_create_user_command

command("BangerExec", function(o)
  banger().exec(o.args)
end, { nargs = "*", complete = "shellcmd", desc = "banger: run a command line in the sandbox" })

command("BangerTest", function(o)
  banger().test(o.args)
end, { nargs = "?", desc = "banger: run the tests in the sandbox (failures: diagnostics, quickfix)" })

command("BangerApply", function()
  banger().apply()
end, { nargs = 0, desc = "banger: apply the sandbox's changes to the buffers" })

command("BangerSync", function()
  banger().sync()
end, { nargs = 0, desc = "banger: sync the workspace into the sandbox" })

command("BangerStatus", function()
  banger().show_status()
end, { nargs = 0, desc = "banger: show the sandbox's status" })

command("BangerStop", function()
  banger().stop()
end, { nargs = 0, desc = "banger: stop the sandbox VM" })

command("BangerCancel", function()
  banger().cancel()
end, { nargs = 0, desc = "banger: cancel the commands and test runs in flight" })
