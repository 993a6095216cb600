"""The build step: C filters to proxy-wasm modules, Lua filters checked by LuaJIT."""

from envoyext.build.c import compile_wasm, compiler_version, sdk_include_dir
from envoyext.build.lua import check_lua, luajit_version

__all__ = ["compile_wasm", "compiler_version", "sdk_include_dir", "check_lua", "luajit_version"]
