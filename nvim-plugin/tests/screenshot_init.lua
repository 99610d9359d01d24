-- A user's config for the screenshot run (tests/guest/nvim.rs runs Neovim
-- with it inside tmux): the plugin, its statusline component, and
-- diagnostics shown inline.
local plugin = assert(os.getenv("BANGER_E2E_PLUGIN"), "BANGER_E2E_PLUGIN")
vim.opt.rtp:prepend(plugin)
vim.cmd("runtime! plugin/banger.lua")
vim.o.swapfile = false
vim.o.termguicolors = true
vim.o.number = true
vim.o.signcolumn = "yes"
vim.o.laststatus = 2
vim.o.statusline = " %f %m%=%{v:lua.require'banger'.status()} "
vim.diagnostic.config({ virtual_text = true, signs = true, underline = true })
require("banger").setup({
  cmd = assert(os.getenv("BANGER_E2E_BANGER"), "BANGER_E2E_BANGER"),
  output = { height = 8 },
})
