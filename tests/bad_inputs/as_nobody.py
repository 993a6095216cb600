"""Run the envoyext CLI as user `nobody`: the suite runs as root, for whom every file is readable
and every directory writable, so an unreadable file or a read-only project needs a real user.

The interpreter and its standard library may live where `nobody` cannot read (root's home), so
everything the commands import is imported before the privileges are dropped."""

import os
import pickle  # noqa: F401  (jinja2 imports it late)
import pwd
import sys

import jinja2  # noqa: F401
import jsonschema  # noqa: F401

import envoyext.build.c  # noqa: F401
import envoyext.build.lua  # noqa: F401
import envoyext.cli
import envoyext.project  # noqa: F401
import envoyext.report  # noqa: F401
import envoyext.runners.emulated  # noqa: F401
import envoyext.scaffold  # noqa: F401
import envoyext.scenario  # noqa: F401
import envoyext.testrun  # noqa: F401

nobody = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(nobody.pw_gid)
os.setuid(nobody.pw_uid)
sys.argv[0] = "envoyext"
envoyext.cli.main()
