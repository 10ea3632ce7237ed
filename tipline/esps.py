"""`tipline esp add NAME` and `tipline esp list`: the ESPs that may use /ispws.

Credentials live in the stack's Redis: --redis, REDIS_URL (with REDIS_PASSWORD), or the one
`tipline up` runs (read from its workdir, password included). A password is printed once, when
made; only its salted hash is kept.
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from services.intake.esps import EspRegistry
from shared.keyfiles import write_json
from shared.settings import Settings
from shared.store import connect


def _settings(args: argparse.Namespace) -> Settings:
    """--redis, else REDIS_URL, else the Redis of the stack `tipline up` runs in the workdir."""
    from tipline.status import tool_settings

    settings = tool_settings(Path(os.environ.get("TIPLINE_WORKDIR", ".tipline")))
    if args.redis and args.redis != settings.redis_url:  # another Redis: not the stack's login
        given = Settings()
        return settings.model_copy(update={"redis_url": args.redis,
                                           "redis_username": given.redis_username,
                                           "redis_password": given.redis_password})
    return settings


async def _add(settings: Settings, name: str) -> str:
    redis = connect(settings)
    try:
        return await EspRegistry(redis).add(name)
    finally:
        await redis.aclose()


async def _list(settings: Settings) -> dict[str, str]:
    redis = connect(settings)
    try:
        return await EspRegistry(redis).names()
    finally:
        await redis.aclose()


def cmd_add(args: argparse.Namespace) -> int:
    try:
        password = asyncio.run(_add(_settings(args), args.name))
    except ValueError as exc:
        print(f"tipline esp add: {exc}", file=sys.stderr)
        return 2
    print(f"ESP {args.name} can now use /ispws with HTTP Basic:")
    print(f"  username  {args.name}")
    print(f"  password  {password}")
    print("The password is shown only this once; `tipline esp add` again makes a new one.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for name, created in asyncio.run(_list(_settings(args))).items():
        print(f"{name:<32} password set {created}")
    return 0


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    esp = sub.add_parser("esp", help="manage the ESPs that may use the reporting API (/ispws)")
    esp.add_argument("--redis", help="Redis URL of the stack (default: REDIS_URL)")
    esp_sub = esp.add_subparsers(dest="esp_command", required=True)
    add = esp_sub.add_parser("add", help="register an ESP (or renew its password); prints it once")
    add.add_argument("name")
    add.set_defaults(func=cmd_add)
    listing = esp_sub.add_parser("list", help="the registered ESPs")
    listing.set_defaults(func=cmd_list)


LOGINS_FILE = "esp-logins.json"  # development ESP logins kept in the workdir (mode 0600)


async def dev_logins(settings: Settings, names: list[str], workdir: Path) -> dict[str, str]:
    """Logins for these ESPs on a development stack: the ones kept in the workdir, and new ones
    registered (and kept) for the rest. For the demo and load tools, never production."""
    path = workdir / LOGINS_FILE
    kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    redis = connect(settings)
    try:
        registry = EspRegistry(redis)
        known = await registry.names()
        for name in names:
            if name not in kept or name not in known:
                kept[name] = await registry.add(name)
    finally:
        await redis.aclose()
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(path, kept, 0o600)
    return {name: kept[name] for name in names}
