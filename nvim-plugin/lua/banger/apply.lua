-- "Apply guest changes": the code action, and the server's
-- workspace/applyEdit, confirmed (the server marks it needsConfirmation)
-- and then applied by Neovim's own handler (vim.lsp.util.apply_workspace_edit).

local config = require("banger.config")
local lsp = require("banger.lsp")

local M = {}

M.KIND = "source.applyGuestChanges"

local function relative(root, uri)
  local path = vim.uri_to_fname(uri)
  if root and path:sub(1, #root + 1) == root .. "/" then
    return path:sub(#root + 2)
  end
  return path
end

--- What an edit does, one line per file ("M notes.txt", "A new.txt",
--- "D gone.txt").
function M.describe(edit, root)
  local out = {}
  local created = {}
  for _, change in ipairs(edit.documentChanges or {}) do
    if change.kind == "create" then
      created[change.uri] = true
      table.insert(out, "A " .. relative(root, change.uri))
    elseif change.kind == "delete" then
      table.insert(out, "D " .. relative(root, change.uri))
    elseif change.kind == "rename" then
      table.insert(out, "R " .. relative(root, change.oldUri) .. " -> " .. relative(root, change.newUri))
    elseif change.textDocument and not created[change.textDocument.uri] then
      table.insert(out, "M " .. relative(root, change.textDocument.uri))
    end
  end
  for uri, _ in pairs(edit.changes or {}) do
    table.insert(out, "M " .. relative(root, uri))
  end
  return out
end

local function needs_confirmation(edit)
  for _, a in pairs(edit.changeAnnotations or {}) do
    if type(a) == "table" and a.needsConfirmation then
      return true
    end
  end
  return false
end

-- Asks Apply/Cancel. Server requests run in a coroutine (0.10+), so
-- vim.ui.select (which may be asynchronous) is waited for; without one,
-- vim.fn.confirm blocks.
local function ask(prompt)
  local co, is_main = coroutine.running()
  if co and not is_main then
    vim.ui.select({ "Apply", "Cancel" }, { prompt = prompt, kind = "banger_apply" }, function(choice)
      vim.schedule(function()
        coroutine.resume(co, choice)
      end)
    end)
    return coroutine.yield() == "Apply"
  end
  return vim.fn.confirm(prompt, "&Apply\n&Cancel", 2) == 1
end

--- Handler of the server's `workspace/applyEdit`.
function M.handle_apply_edit(err, params, ctx)
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  local st = lsp.state_for(ctx.client_id)
  local edit = params and params.edit or {}
  local root = client and client.config.root_dir
  local files = M.describe(edit, root)
  if config.options.confirm_apply and needs_confirmation(edit) then
    local label, description = "Apply guest changes", nil
    for _, a in pairs(edit.changeAnnotations or {}) do
      label, description = a.label or label, a.description
      break
    end
    local prompt = ("banger: %s%s?\n  %s\n"):format(
      label,
      description and (" (" .. description .. ")") or "",
      table.concat(files, "\n  ")
    )
    if not ask(prompt) then
      st.last_apply = { applied = false, files = files, reason = "declined" }
      return { applied = false, failureReason = "declined" }
    end
  end
  local result = vim.lsp.handlers["workspace/applyEdit"](err, params, ctx)
  st.last_apply = {
    applied = result and result.applied,
    files = files,
    reason = result and result.failureReason,
  }
  return result
end

--- :BangerApply: asks the server for the "Apply guest changes" code
--- action and runs its command.
--- @param client vim.lsp.Client
--- @param done fun(err: string|nil, message: string|nil)
function M.apply(client, done)
  local bufnr = vim.api.nvim_get_current_buf()
  local uri
  if lsp.buffer_root(bufnr) == client.config.root_dir then
    uri = vim.uri_from_bufnr(bufnr)
  else
    uri = vim.uri_from_fname(client.config.root_dir)
    bufnr = nil
  end
  local st = lsp.state_for(client.id)
  local params = {
    textDocument = { uri = uri },
    range = { start = { line = 0, character = 0 }, ["end"] = { line = 0, character = 0 } },
    context = { diagnostics = {}, only = { M.KIND } },
  }
  lsp.request(client, "textDocument/codeAction", params, function(cerr, actions)
    if cerr then
      return done("banger: code actions failed: " .. (cerr.message or vim.inspect(cerr)))
    end
    local action
    for _, a in ipairs(actions or {}) do
      if a.kind == M.KIND and a.command then
        action = a
        break
      end
    end
    local command, title, via
    if action then
      command, title, via = action.command, action.title, "codeAction"
    else
      -- The server counts guest changes about once a second; a change it
      -- has not seen yet is still applied: the command asks the guest.
      command, title, via = { command = "banger.applyGuestChanges", arguments = {} }, "Apply guest changes", "command"
    end
    st.applying = { title = title, via = via }
    st.last_apply = nil
    lsp.execute(client, command.command, command.arguments or {}, function(err, result)
      st.applying = nil
      local la = st.last_apply or {}
      la.title, la.via = title, via
      st.last_apply = la
      if err then
        la.applied = false
        la.error = err.message
        return done("banger: " .. (err.message or "applying guest changes failed"))
      end
      local n = result and result.files or 0
      la.count = n
      if n == 0 then
        la.applied = false
        return done(nil, "banger: the sandbox has no changes to apply")
      end
      done(
        nil,
        ("banger: applied %d file%s from the sandbox (%s); review, then :wall to write them"):format(
          n,
          n == 1 and "" or "s",
          table.concat(la.files or {}, ", ")
        )
      )
    end, bufnr)
  end, bufnr)
end

return M
