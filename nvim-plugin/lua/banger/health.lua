-- :checkhealth banger

local M = {}

local health = vim.health

local function run(cmd, timeout)
  local ok, obj = pcall(vim.system, cmd, { text = true })
  if not ok then
    return { code = -1, stdout = "", stderr = tostring(obj) }
  end
  local r = obj:wait(timeout or 15000)
  return { code = r.code, stdout = r.stdout or "", stderr = r.stderr or "" }
end

local function first_line(s)
  return (s or ""):match("[^\n]*") or ""
end

function M.check()
  local config = require("banger.config")
  local lsp = require("banger.lsp")

  health.start("banger: Neovim")
  local v = vim.version()
  local version = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. version)
  else
    health.error("Neovim " .. version .. " is too old", { "banger.nvim needs Neovim 0.10 or later" })
  end

  health.start("banger: the banger binary")
  local exe = config.executable()
  local path = vim.fn.exepath(exe)
  if path == "" then
    health.error(("`%s` is not found (setup option `cmd`)"):format(exe), {
      "install banger (see the README), or put it on $PATH",
      'or point the plugin at it: require("banger").setup({ cmd = "/path/to/banger" })',
    })
    return
  end
  local ver = run({ path, "--version" })
  if ver.code ~= 0 then
    health.error(("`%s --version` failed (exit %d): %s"):format(path, ver.code, first_line(ver.stderr)), {
      "reinstall banger; `banger lsp` cannot start either",
    })
    return
  end
  health.ok(("%s at %s"):format(first_line(ver.stdout), path))

  health.start("banger: daemon")
  local daemon = run({ path, "daemon", "status" })
  local info
  if daemon.code == 0 then
    local okj, decoded = pcall(vim.json.decode, daemon.stdout, { luanil = { object = true } })
    info = okj and decoded or nil
    if type(info) == "table" then
      health.ok(("bangerd %s running (pid %s), socket %s"):format(info.version or "?", info.pid or "?", info.socket or "?"))
      if info.accel then
        health.info(("new VMs get accelerator %s; VMM %s"):format(info.accel, info.vmm or "?"))
      end
    else
      health.ok(first_line(daemon.stdout))
      info = nil
    end
  elseif daemon.code == 3 then
    health.warn("bangerd is not running", {
      "banger starts it when needed (the first command, or `banger lsp` on start)",
      "start it yourself with: banger daemon start",
      "if it does not start: banger doctor, and `banger -v daemon start`",
    })
  else
    health.error(("`banger daemon status` failed (exit %d): %s"):format(daemon.code, first_line(daemon.stderr)), {
      "run: banger doctor",
      "the daemon's socket is under $XDG_RUNTIME_DIR/banger; check that variable is set as in your shell",
    })
  end

  health.start("banger: this repository's sandbox")
  local s, _, client = require("banger").get_status()
  local root = client and client.config.root_dir
    or lsp.buffer_root(vim.api.nvim_get_current_buf())
    or lsp.cwd_root()
  if not root then
    health.info("not inside a git repository: open a file of one to bind it to a sandbox")
  elseif not client then
    health.warn(("no banger client for %s"):format(root), {
      'call require("banger").setup() in your config, then open a file of the repository',
    })
  elseif not s then
    health.warn(("`banger lsp` for %s has not reported its status yet"):format(root), {
      "wait a moment and run :checkhealth banger again; if it stays so, see :LspLog",
    })
  else
    local vm_view
    if s.vm and s.vm ~= "" then
      local shown = run({ path, "vm", "show", s.vm })
      if shown.code == 0 then
        local okj, decoded = pcall(vim.json.decode, shown.stdout, { luanil = { object = true } })
        vm_view = okj and decoded or nil
      end
    end
    local line = ("%s is bound to sandbox %s: %s, workspace %s"):format(root, s.vm, s.vmState, s.sync)
    if s.sync == "error" then
      health.error(line .. ((s.message and s.message ~= vim.NIL) and (": " .. s.message) or ""), {
        "run :BangerSync to retry; `banger vm show " .. s.vm .. "` shows the VM and its last error",
        "banger doctor checks the host",
      })
    elseif s.sync == "conflict" then
      health.warn(line .. ((s.message and s.message ~= vim.NIL) and (": " .. s.message) or ""), {
        ":BangerApply takes the sandbox's copies; the code action 'Overwrite guest copy' keeps yours",
      })
    elseif s.vmState == "running" then
      health.ok(line)
    elseif s.vmState == "absent" then
      health.ok(line .. " (the VM is created on the first :BangerTest or :BangerExec)")
    elseif s.vmState == "stopped" then
      health.ok(line .. " (it starts on the first :BangerTest or :BangerExec)")
    else
      health.warn(line, { "see: banger vm show " .. s.vm })
    end
    if vm_view and vm_view.last_error and vm_view.last_error ~= vim.NIL then
      health.warn("its last start failed: " .. tostring(vm_view.last_error), { "banger vm show " .. s.vm })
    end
    if vm_view and vm_view.accel then
      health.info(("it runs with accelerator %s, VMM %s"):format(vm_view.accel, vm_view.vmm or "?"))
    end
  end

  health.start("banger: accelerator (banger doctor)")
  local doctor = run({ path, "doctor" }, 30000)
  local seen = false
  for l in (doctor.stdout or ""):gmatch("[^\n]+") do
    local tag, name, detail = l:match("^(%S+)%s+(%S.-)%s%s+(.*)$")
    if tag and name then
      seen = true
      local text = name .. ": " .. detail
      if name == "accel" then
        if tag == "ok" then
          health.ok(text)
        else
          health.warn(text, {
            "without KVM, guests run under QEMU's software emulation: correct, but slow",
            "for KVM: a host with /dev/kvm usable by this user (group kvm), see banger doctor",
          })
        end
      elseif tag == "FAIL" then
        health.error(text, { "see: banger doctor" })
      elseif name == "vmm" then
        health.ok(text)
      elseif tag == "warn" then
        health.info(text)
      end
    end
  end
  if not seen then
    health.error(("`banger doctor` printed nothing usable (exit %d): %s"):format(doctor.code, first_line(doctor.stderr)), {
      "run banger doctor in a terminal",
    })
  elseif doctor.code ~= 0 then
    health.error("banger doctor reports a failure (above)", { "fix what it names, then run :checkhealth banger again" })
  end
end

return M
