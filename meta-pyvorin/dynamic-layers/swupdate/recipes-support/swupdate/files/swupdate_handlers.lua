--[[
  SWUpdate image handler "pyvdelta": rebuilds the inactive slot from the
  active one with a pyvorin windowed delta.

  sw-description:
      { filename = "rootfs.pyvd"; type = "pyvdelta"; device = "<inactive slot>";
        properties = { source = "<active slot>"; }; sha256 = "..."; }

  The delta (a few MiB) is copied to TMPDIR, then pyvorin-delta-apply checks
  the delta's own hash and the active slot's hash before writing anything, and
  reads the written slot back against the new image's hash.  Any failure
  fails the update, so the boot environment is not switched.
--]]

local swupdate = require("swupdate")

-- The applier, from the read-only root (pyvorin-delta-apply recipe).
local APPLY = "/usr/bin/pyvorin-delta-apply"

local function quote(text)
    return "'" .. tostring(text):gsub("'", "'\\''") .. "'"
end

-- os.execute's result differs between Lua versions: 5.1 returns the exit
-- status as a number, 5.2+ returns true/nil, "exit"/"signal", code. Success is
-- a normal exit with status 0 in either.
local function succeeded(first, how, code)
    if type(first) == "number" then
        return first == 0
    end
    return first == true and (how == nil or how == "exit") and (code == nil or code == 0)
end

local function pyvdelta(image)
    local source = image.properties and image.properties.source
    if type(source) ~= "string" or source == "" then
        swupdate.error("pyvdelta: image " .. tostring(image.filename) .. " has no properties.source (the active slot)")
        return 1
    end
    if not image.device or image.device == source then
        swupdate.error("pyvdelta: device must name the inactive slot, not the source")
        return 1
    end
    local delta = (os.getenv("TMPDIR") or "/tmp") .. "/pyvdelta-" .. image.filename:gsub("[^%w._-]", "_")
    local err, msg = image:copy2file(delta)
    if err ~= 0 then
        swupdate.error("pyvdelta: cannot extract " .. image.filename .. ": " .. tostring(msg))
        os.remove(delta)
        return 1
    end
    local command = APPLY .. " " .. quote(delta) .. " --source " .. quote(source) .. " --target " .. quote(image.device)
    swupdate.info("pyvdelta: " .. command)
    local ok = succeeded(os.execute(command .. " 2>&1"))
    os.remove(delta)
    if not ok then
        swupdate.error("pyvdelta: applying " .. image.filename .. " failed")
        return 1
    end
    return 0
end

swupdate.register_handler("pyvdelta", pyvdelta, swupdate.HANDLER_MASK.IMAGE_HANDLER)
