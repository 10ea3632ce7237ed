"""`tipline esp add NAME` and `tipline esp list`: the ESPs that may use /ispws.

Credentials live in the stack's Redis: --redis, REDIS_URL (with REDIS_PASSWORD), or the one
`tipline up` runs (read from its workdir, password included). A password is printed once, when
made; only its salted hash is kept.
"""

import argparse
import asyncio
import sys

from services.intake.esps import EspRegistry
from shared.settings import Settings
from shared.store import connect


def _settings(args: argparse.Namespace) -> Settings:
    """--redis, else REDIS_URL, else the Redis of the stack `tipline up` runs in the workdir."""
    from tipline.status import redis_settings

    return redis_settings(args.redis)


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
