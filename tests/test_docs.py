"""The README is the reference: every config key, CLI command and route is in it, and its examples parse."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# Placeholders in the README's command lines, and a value each parses as.
PLACEHOLDERS = {"KEY": "sine:demo", "VERSION": "2", "T": "2024-01-01T00:00:00Z", "H": "127.0.0.1", "P": "8000",
                "N": "2", "PATH": "/tmp/x.log", "REVISION": "head"}
INTERNAL_KEYS = {"config_path"}  # set by the loader from --config, never written in a file


def _code_blocks(lang: str) -> Iterator[str]:
    for m in re.finditer(rf"```{lang}\n(.*?)```", README, flags=re.S):
        yield m.group(1)


def _config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, name as written in a file) of every settings field, nested models included."""
    for name, field in model.model_fields.items():
        written = field.alias or name
        if prefix == "" and name in INTERNAL_KEYS:
            continue
        yield f"{prefix}{written}", written
        for arg in _nested_models(field.annotation):
            yield from _config_keys(arg, f"{prefix}{written}.")


def _nested_models(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _nested_models(arg)


def _documented(name: str) -> bool:
    """Named in backticks, as a TOML key (`name = ...`, `{ name = ...}`) or as a TOML table (`[name]`, `[a.name]`)."""
    key = re.escape(name)
    return f"`{name}`" in README or any(re.search(rx, README, flags=re.M) for rx in (
        rf"^\s*{key}\s*=", rf"[{{,]\s*{key}\s*=", rf"\[{{1,2}}([\w-]+\.)?{key}[\].]"))


def test_every_config_key_is_in_the_readme() -> None:
    from forecaster.config import settings as config

    models: list[type[BaseModel]] = [config.Settings, *config.PARAMS_BY_SOURCE.values()]
    missing = sorted({path for m in models for path, name in _config_keys(m) if not _documented(name)})
    assert missing == [], f"config keys the README does not name: {missing}"


# typer vendors its own click: groups and errors are recognised by what they have, not their class.
Command = Any


def _is_group(command: Command) -> bool:
    return hasattr(command, "commands") and hasattr(command, "resolve_command")


def _cli() -> Command:
    from forecaster import cli

    command = typer.main.get_command(cli.app)
    assert _is_group(command)
    return command


def _commands(group: Command, prefix: str = "forecaster") -> Iterator[str]:
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if _is_group(command):
            yield from _commands(command, path)
        else:
            yield path


def test_every_cli_command_is_in_the_readme() -> None:
    commands = sorted(_commands(_cli()))
    assert "forecaster models list" in commands and "forecaster up" in commands
    missing = [c for c in commands if re.search(rf"^{re.escape(c)}\b", README, flags=re.M) is None]
    assert missing == [], f"CLI commands without a README line: {missing}"


def _readme_command_lines() -> list[str]:
    lines = []
    for block in _code_blocks("sh"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(".venv/bin/forecaster"):
                line = line.removeprefix(".venv/bin/")
            if line.startswith("forecaster "):
                lines.append(line)
    return lines


def _rest(ctx: Any) -> list[str]:
    """What a group left for its subcommand (click 8.2 keeps the command name apart in _protected_args)."""
    return [*getattr(ctx, "_protected_args", []), *ctx.args]


def _parse(group: Command, args: list[str]) -> Command:
    """Parse a command line as the CLI would, without running it (click raises on anything it refuses)."""
    ctx = group.make_context("forecaster", list(args))
    command = group
    rest = _rest(ctx)
    while _is_group(command) and rest:
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command, rest = sub, (_rest(ctx) if _is_group(sub) else [])
    return command


def test_every_readme_command_line_parses() -> None:
    lines = _readme_command_lines()
    assert len(lines) >= 10, lines
    group = _cli()
    for line in lines:
        if line.endswith("--help"):
            continue  # help exits before parsing the rest
        words = shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", line))  # optional parts: written out
        words = [PLACEHOLDERS.get(w, w) for w in words[1:]]
        try:
            command = _parse(group, words)
        except Exception as exc:  # click's UsageError / BadParameter, from typer's vendored copy
            pytest.fail(f"README line {line!r} does not parse: {getattr(exc, 'format_message', exc.__str__)()}")
        assert not _is_group(command), f"README line {line!r} names a group, not a command"


def _route_table() -> set[tuple[str, str, bool]]:
    rows = re.findall(r"^\| (GET|POST|DELETE|PUT|PATCH) \| `([^`]+)` \| (admin)? ?\|", README, flags=re.M)
    return {(method, path, admin == "admin") for method, path, admin in rows}


def _routes() -> set[tuple[str, str, bool]]:
    """(method, path template, needs the admin key) of every documented route, from the app's OpenAPI."""
    from api.app import create_app
    from forecaster.config.settings import Settings

    spec = create_app(Settings(database_url="sqlite://")).openapi()
    return {(method.upper(), path, bool(op.get("security")))
            for path, ops in spec["paths"].items() for method, op in ops.items()}


def test_every_route_is_in_the_readme_table_with_its_key_rule() -> None:
    routes, table = _routes(), _route_table()
    assert ("GET", "/v1/series/{key}/forecast", False) in routes
    assert routes - table == set(), f"routes missing from the README table (or with the wrong key rule): {routes - table}"
    assert table - routes == set(), f"README table rows that are no route: {table - routes}"


def test_every_readme_curl_example_names_a_route() -> None:
    routes = _routes()
    templates = [(m, re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$")) for m, p, _ in routes]
    examples = []
    for block in _code_blocks("sh"):
        for line in block.splitlines():
            m = re.search(r"curl -s (?:-X (\w+) )?\"?\$B(/[^\s\"?]*)", line)
            if m:
                examples.append((m.group(1) or ("POST" if " -d " in line else "GET"), m.group(2)))
    assert len(examples) >= 10, examples
    unknown = [(method, path) for method, path in examples
               if not any(method == rm and rx.match(path) for rm, rx in templates)]
    assert unknown == [], f"README curl examples that no route answers: {unknown}"
