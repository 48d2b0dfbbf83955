"""The root command loads each noun on first use: what `godel --help` lists without loading them must be what
they say of themselves, and every entry must load."""

from __future__ import annotations

import importlib

import typer
from typer.testing import CliRunner

from godel.cli.main import COMMANDS, GodelGroup, Verbs, app, load_command


def test_every_entry_loads_under_its_name() -> None:
    for name in COMMANDS:
        assert load_command(name).name == name


def test_the_listing_without_loading_is_the_listing_after_loading() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, GodelGroup)
    with group.make_context("godel", ["--help"], resilient_parsing=True) as ctx:
        lazy = group.get_help(ctx)
        assert not group.commands  # nothing loaded to list them
        for name in COMMANDS:
            group.commands[name] = load_command(name)
        loaded = group.get_help(ctx)
    assert lazy == loaded


def test_a_noun_with_one_verb_stays_a_group() -> None:
    result = CliRunner().invoke(app, ["dev", "--help"])
    assert result.exit_code == 0 and "model" in result.stdout


def test_a_verb_is_built_when_named_only() -> None:
    agent = load_command("agent")
    assert isinstance(agent, Verbs) and not agent.commands
    with agent.make_context("agent", ["list"], resilient_parsing=True) as ctx:
        assert agent.get_command(ctx, "list").name == "list"
    assert list(agent.commands) == ["list"]


def test_each_noun_helps_as_typer_would_build_it_whole() -> None:
    for name, (module, attribute, _) in COMMANDS.items():
        target = getattr(importlib.import_module(module), attribute)
        if not isinstance(target, typer.Typer):
            continue
        lazy, whole = Verbs.of(target), typer.main.get_group(target)
        with (
            lazy.make_context(name, [], resilient_parsing=True) as a,
            whole.make_context(name, [], resilient_parsing=True) as b,
        ):
            assert lazy.get_help(a) == whole.get_help(b), name
