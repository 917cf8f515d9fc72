"""The documentation says only what is true: every command and option is in docs/cli.md, every
command the README shows exists, and docs/architecture.md and the folder READMEs name only
tables, functions, files and import rules that the code really has."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer

from conveyor.cli.app import app

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "conveyor"
CLI_MD = REPO / "docs" / "cli.md"
ARCHITECTURE_MD = REPO / "docs" / "architecture.md"


def _commands() -> dict[str, object]:
    """The click commands behind the Typer app, by name; a group's as ``GROUP SUB``."""
    group = typer.main.get_command(app)
    found: dict[str, object] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None)
        if subs:
            found.update({f"{name} {sub}": cmd for sub, cmd in subs.items()})
        else:
            found[name] = command
    return found


def _options(command: object) -> set[str]:
    names: set[str] = {"--help"}
    for param in command.params:  # type: ignore[attr-defined]
        if param.param_type_name == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _sections(text: str) -> dict[str, str]:
    """docs/cli.md split at its ``## `conveyor NAME` `` headings."""
    parts = re.split(r"^## `conveyor ([\w-]+(?: [\w-]+)?)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _code(text: str) -> list[str]:
    """The text of every fenced code block and inline code span of a Markdown document."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    return fenced + re.findall(r"`([^`\n]+)`", rest)


def _invocations(code: str) -> list[list[str]]:
    """Each ``conveyor ...`` command line in a piece of code, as its arguments (no comments)."""
    found = []
    for line in code.splitlines():
        line = line.removeprefix("$ ").split("  #")[0].split(" # ")[0]
        for part in re.split(r"&&|;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            if len(words) >= 2 and words[0] == "conveyor":
                found.append(words[1:])
    return found


def _check_invocations(code_blocks: list[str], where: str) -> int:
    commands = _commands()
    checked = 0
    for code in code_blocks:
        for first, second in re.findall(
            r"(?<![\w./-])conveyor ([a-z][\w-]*)(?: ([a-z][\w-]*))?", code
        ):
            mention = f"{first} {second}" if f"{first} {second}" in commands else first
            known = mention in commands or any(c.startswith(f"{first} ") for c in commands)
            assert known, f"{where} mentions 'conveyor {mention}', no such command"
        for args in _invocations(code):
            name = args[0]
            if name == "--help":
                continue
            if len(args) > 1 and f"{name} {args[1]}" in commands:
                name, args = f"{name} {args[1]}", [f"{name} {args[1]}", *args[2:]]
            assert name in commands, f"{where} shows 'conveyor {' '.join(args)}'"
            for arg in args[1:]:
                if arg.startswith("-"):
                    option = arg.split("=", 1)[0]
                    assert option in _options(commands[name]), (
                        f"{where} shows 'conveyor {' '.join(args)}': {name} has no {option}"
                    )
            checked += 1
    return checked


def test_every_command_and_option_is_documented_in_cli_md() -> None:
    sections = _sections(CLI_MD.read_text())
    commands = _commands()

    assert set(sections) == set(commands), "docs/cli.md sections differ from the commands"
    for name, command in commands.items():
        section = sections[name]
        assert "```console" in section, f"docs/cli.md: {name} has no example"
        for option in _options(command) - {"--help"}:
            assert re.search(rf"`{re.escape(option)}[ `]", section), (
                f"docs/cli.md: 'conveyor {name}' does not document {option}"
            )
        for param in command.params:  # type: ignore[attr-defined]
            if param.param_type_name == "argument":
                assert f"`{param.name.upper()}`" in section, (
                    f"docs/cli.md: 'conveyor {name}' does not document its argument {param.name}"
                )


def test_the_examples_in_cli_md_use_real_commands_and_options() -> None:
    text = CLI_MD.read_text()
    blocks = re.findall(r"^```console\n(.*?)^```", text, flags=re.M | re.S)
    lines = ["\n".join(ln for ln in b.splitlines() if ln.startswith("$ ")) for b in blocks]

    assert _check_invocations(lines, "docs/cli.md") >= len(_commands())


def test_every_command_the_readme_shows_exists() -> None:
    readme = (REPO / "README.md").read_text()

    assert _check_invocations(_code(readme), "README.md") >= 4


# -- docs/architecture.md ---------------------------------------------------------------------


def _defined_names() -> set[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
    return names


def test_architecture_md_names_only_functions_and_classes_that_exist() -> None:
    text = ARCHITECTURE_MD.read_text()
    defined = _defined_names()
    called = re.findall(r"`(?:[\w.]+\.)?(\w+)\(\)`", text)
    classes = re.findall(r"`([A-Z][a-z]\w*[a-z]\w*)`", text)

    assert len(called) >= 20, "docs/architecture.md should quote the functions it describes"
    missing = sorted({n for n in called if n not in defined})
    assert not missing, f"docs/architecture.md names functions that do not exist: {missing}"
    missing = sorted({n for n in classes if n not in defined})
    assert not missing, f"docs/architecture.md names classes that do not exist: {missing}"


def _paths(text: str) -> set[str]:
    found = set(re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|md|mako))`", text))
    return found | set(re.findall(r"`((?:[\w-]+/)+)`", text))


def test_architecture_md_names_only_files_that_exist() -> None:
    built, _, planned = ARCHITECTURE_MD.read_text().partition("## Not built yet")
    bases = (REPO, SRC, *(p for p in SRC.iterdir() if p.is_dir()))

    paths = _paths(built)

    assert len(paths) >= 15
    missing = sorted(p for p in paths if not any((base / p).exists() for base in bases))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    # And what it calls unbuilt really is: building one of these means updating the page.
    planned_folders = _paths(planned)
    assert len(planned_folders) >= 1
    built_now = sorted(p for p in planned_folders if (SRC / p).exists())
    assert not built_now, f"docs/architecture.md still calls {built_now} not built"


def _section(text: str, heading: str) -> str:
    """The body of the ``## `` section whose heading starts with ``heading``."""
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    bodies = [body for title, body in zip(parts[1::2], parts[2::2], strict=True)]
    found = [b for title, b in zip(parts[1::2], bodies, strict=True) if title.startswith(heading)]
    assert len(found) == 1, f"docs/architecture.md needs one section '{heading}'"
    return found[0]


def _import_contracts() -> list[dict]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def _layer_names() -> list[list[str]]:
    """The layers contract's layers, top first, each as its module names (``conveyor.`` cut)."""
    (layers,) = [c["layers"] for c in _import_contracts() if c["type"] == "layers"]
    return [
        [name.strip().removeprefix("conveyor.") for name in re.split(r"[|:]", layer)]
        for layer in layers
    ]


def test_architecture_md_states_the_layers_exactly_as_pyproject_declares_them() -> None:
    section = _section(ARCHITECTURE_MD.read_text(), "## Layers")
    block = re.search(r"^```[^\n]*\n(.*?)^```", section, flags=re.M | re.S)
    assert block, "docs/architecture.md '## Layers' has no fenced block of the layers"
    written = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    (contract,) = [c for c in _import_contracts() if c["type"] == "layers"]

    assert written == contract["layers"]


def test_architecture_md_describes_every_forbidden_contract() -> None:
    section = _section(ARCHITECTURE_MD.read_text(), "## Layers")
    packages = {name for layer in _layer_names() for name in layer}
    forbidden = [c for c in _import_contracts() if c["type"] == "forbidden"]

    assert len(forbidden) >= 3
    for contract in forbidden:
        name = contract["name"]
        item = re.search(rf"^- \*\*{re.escape(name)}\*\*(.*?)(?=^- |^$)", section, re.M | re.S)
        assert item, f"docs/architecture.md '## Layers' has no item '- **{name}**'"
        text = " ".join(item.group(1).split())
        for module in contract["forbidden_modules"]:
            assert f"`{module}`" in text, f"'{name}': the text does not name `{module}`"
        allowed = packages - {m.removeprefix("conveyor.") for m in contract["source_modules"]}
        assert allowed, f"'{name}' forbids every package"
        for package in allowed:
            assert f"`{package}/`" in text, f"'{name}': the text does not name `{package}/`"
        declared = {
            exemption.split("->")[0].strip().removeprefix("conveyor.").replace(".", "/") + ".py"
            for exemption in contract.get("ignore_imports", [])
        }
        named = set(re.findall(r"`([\w/]+\.py)`", text))
        assert named == declared, f"'{name}': the declared importers are {sorted(declared)}"


def test_package_readme_lists_every_package_in_the_order_of_the_layers() -> None:
    readme = (SRC / "README.md").read_text()
    listed = re.findall(r"^- `(\w+)(?:/|\.py)`", readme, flags=re.M)
    rank = {name: -i for i, layer in enumerate(_layer_names()) for name in layer}
    rank["__init__"] = -len(rank) - 1  # the public API, read first
    on_disk = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")}

    assert set(listed) == on_disk | modules, "src/conveyor/README.md differs from the packages"
    assert set(listed) == set(rank), "src/conveyor/README.md differs from the layers contract"
    assert len(listed) == len(set(listed))
    order = [rank[name] for name in listed]
    assert order == sorted(order), f"src/conveyor/README.md is not in layer order: {listed}"


def test_architecture_md_package_layout_names_every_module() -> None:
    layout = _section(ARCHITECTURE_MD.read_text(), "## Package layout")
    rows = dict(re.findall(r"^\| `([\w./]+)` \| (.*) \|$", layout, flags=re.M))
    skipped = ("__init__.py",)
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if path.name in skipped or rel.parts[:2] in (("store", "migrations"),):
            continue
        if rel.parts[:2] == ("actions", "templates"):
            continue
        if len(rel.parts) == 1:
            found = rel.name in rows
        else:
            row = rows.get(f"{rel.parts[0]}/", "")
            found = f"`{Path(*rel.parts[1:])}`" in row
        if not found:
            missing.append(str(rel))

    assert not missing, f"docs/architecture.md '## Package layout' does not name {missing}"
    assert "`migrations/`" in rows["store/"]


def test_architecture_md_points_only_inside_the_repository() -> None:
    text = ARCHITECTURE_MD.read_text()
    headings = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", text, flags=re.M)
    }

    assert "/work/" not in text
    assert "../" not in text
    for target in re.findall(r"\]\(([^)]*)\)", text):
        if target.startswith("#"):
            assert target[1:] in headings, f"docs/architecture.md links to a missing {target}"
        else:
            assert "://" not in target and not target.startswith("/"), target
            assert (ARCHITECTURE_MD.parent / target).resolve().is_relative_to(REPO), target
            assert (ARCHITECTURE_MD.parent / target).exists(), target


def test_architecture_md_lists_every_table_of_the_metadata_store() -> None:
    from conveyor.store.models import Base

    text = ARCHITECTURE_MD.read_text()
    table = re.search(r"^\| table \|.*?\n((?:\|.*\n)+)", text, flags=re.M)
    assert table, "docs/architecture.md has no '| table | ... |' list of the store's tables"
    documented = set(re.findall(r"^\| `(\w+)` \|", table.group(1), flags=re.M))

    assert documented == set(Base.metadata.tables)


# -- the folder READMEs -----------------------------------------------------------------------


def _conveyor_imports(path: Path) -> set[str]:
    """Every ``conveyor...`` module a file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found.add(node.module if node.module != "conveyor" else f"conveyor.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "conveyor"}


CONSTRAINED_FOLDERS = [
    "config", "store", "data", "evaluate", "pipeline", "gates", "registry", "reports",
    "gateway", "release", "monitor", "export", "actions", "controller", "cli", "dashboard",
]  # fmt: skip


@pytest.mark.parametrize("folder", CONSTRAINED_FOLDERS)
def test_constrained_folders_state_their_constraint_in_three_lines(folder: str) -> None:
    lines = (SRC / folder / "README.md").read_text().strip().splitlines()

    assert len(lines) == 3
    assert lines[0].startswith(f"`{folder}/`")


def test_store_and_data_know_nothing_of_the_layers_above_them() -> None:
    for path in (SRC / "store").rglob("*.py"):
        for module in _conveyor_imports(path):
            assert module == "conveyor.exceptions" or module.startswith("conveyor.store"), (
                f"{path.relative_to(REPO)} imports {module}"
            )
    for path in (SRC / "data").rglob("*.py"):
        for module in _conveyor_imports(path):
            assert module == "conveyor.exceptions" or module.startswith("conveyor.data"), (
                f"{path.relative_to(REPO)} imports {module}"
            )


def test_registry_and_reports_import_only_what_their_readmes_allow() -> None:
    for path in (SRC / "registry").rglob("*.py"):
        for module in _conveyor_imports(path):
            allowed = ("conveyor.store", "conveyor.registry", "conveyor.evaluate")
            assert module.startswith(allowed) or module == "conveyor.exceptions", (
                f"{path.relative_to(REPO)} imports {module}"
            )
    for path in (SRC / "reports").rglob("*.py"):
        for module in _conveyor_imports(path):
            allowed = module in (
                "conveyor.exceptions",
                "conveyor.evaluate.values",
                "conveyor.config.metrics",
            )
            assert allowed or module.startswith("conveyor.reports"), (
                f"{path.relative_to(REPO)} imports {module}"
            )


def test_pipeline_never_imports_the_cli_and_its_workers_never_the_metadata_store() -> None:
    surfaces = ("conveyor.cli",)
    for path in (SRC / "pipeline").rglob("*.py"):
        imported = _conveyor_imports(path)
        assert not {m for m in imported if m.startswith(surfaces)}, path
    workers = [SRC / "pipeline" / name for name in ("worker.py", "task.py", "outputs.py")]
    for path in [*(SRC / "pipeline" / "executors").rglob("*.py"), *workers]:
        assert "conveyor.store.metadata" not in _conveyor_imports(path), path


def _imports(path: Path) -> set[str]:
    """Every module a file imports (any package), at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _called(path: Path) -> set[str]:
    """The names of the functions and methods a file calls (``x.move_alias()``: ``move_alias``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                names.add(func.attr)
            elif isinstance(func, ast.Name):
                names.add(func.id)
    return names


def _modules(*folders: str) -> list[Path]:
    paths = [p for folder in folders for p in (SRC / folder).rglob("*.py")]
    assert paths, folders
    return sorted(paths)


def _outside(*folders: str) -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in folders)


def _top(module: str) -> str:
    return module.split(".")[0]


def test_only_config_imports_pydantic_and_config_reads_no_other_layer() -> None:
    for path in _outside("config"):
        assert "pydantic" not in {_top(m) for m in _imports(path)}, path.relative_to(REPO)
    for path in _modules("config"):
        for module in _conveyor_imports(path):
            allowed = module in ("conveyor.exceptions", "conveyor.project")
            assert allowed or module.startswith("conveyor.config"), (
                f"{path.relative_to(REPO)} imports {module}"
            )


def test_only_cli_talks_to_the_terminal_and_nothing_imports_the_cli() -> None:
    terminal = {"typer", "rich", "click"}
    for path in _outside("cli"):
        assert not terminal & {_top(m) for m in _imports(path)}, path.relative_to(REPO)
        assert not {m for m in _conveyor_imports(path) if m.startswith("conveyor.cli")}, path


def test_only_the_registry_moves_aliases_and_only_releases_write_traffic() -> None:
    alias_writes = {"set_alias", "move_alias", "remove_alias", "unset_alias"}
    for path in _modules("gateway", "monitor", "dashboard"):
        assert not alias_writes & _called(path), path.relative_to(REPO)
    builders = {
        "Alias": SRC / "registry" / "registry.py",
        "Traffic": SRC / "release" / "releases.py",
    }
    for name, owner in builders.items():
        makers = [p for p in SRC.rglob("*.py") if name in _called(p)]
        assert makers == [owner], f"{name} rows are built in {makers}"
    traffic_sql = re.compile(r"\b(?:insert|update|delete)\(\s*(?:m\.Traffic|_TRAFFIC)\b")
    for path in SRC.rglob("*.py"):
        if path != builders["Traffic"]:
            assert not traffic_sql.search(path.read_text()), path.relative_to(REPO)


def test_every_gateway_route_is_answered_by_the_gateway_method_it_names() -> None:
    from conveyor.gateway.app import Gateway
    from conveyor.gateway.routes import ROUTES

    assert len(ROUTES) >= 20
    missing = sorted({r.handler for r in ROUTES if not callable(getattr(Gateway, r.handler, None))})
    assert not missing, f"gateway/routes.py names handlers Gateway lacks: {missing}"


def test_release_and_monitor_never_import_the_gateway_and_only_alerts_write_events() -> None:
    for path in _modules("release", "monitor"):
        imported = _conveyor_imports(path)
        assert not {m for m in imported if m.startswith("conveyor.gateway")}, path
    for path in _modules("monitor"):
        imported = _conveyor_imports(path)
        assert not {m for m in imported if m.startswith("conveyor.release")}, path
        if path.name != "alerts.py":
            assert "add_event" not in _called(path), path.relative_to(REPO)


def test_export_imports_only_config_and_writes_only_through_files_py() -> None:
    writes = {"open", "fdopen", "write_text", "write_bytes", "mkstemp"}
    renames = re.compile(r"\bos\.(?:replace|link|rename)\(")
    for path in _modules("export"):
        for module in _conveyor_imports(path):
            allowed = module.startswith(("conveyor.config", "conveyor.export"))
            assert allowed or module == "conveyor.exceptions", (
                f"{path.relative_to(REPO)} imports {module}"
            )
        if path.name != "files.py":
            assert not writes & _called(path), path.relative_to(REPO)
            assert not renames.search(path.read_text()), path.relative_to(REPO)


def test_actions_and_the_controller_stay_below_the_surfaces_and_train_in_a_child() -> None:
    above = ("conveyor.cli", "conveyor.dashboard", "conveyor.controller")
    for path in _modules("actions"):
        assert not {m for m in _conveyor_imports(path) if m.startswith(above)}, path
    for path in _modules("controller"):
        imported = _conveyor_imports(path)
        assert "conveyor.pipeline.engine" not in imported, path.relative_to(REPO)
        if path.name != "job.py":
            assert "conveyor.actions.ci" not in imported, path.relative_to(REPO)
    assert "conveyor.actions.ci" in _conveyor_imports(SRC / "controller" / "job.py")


def test_data_and_the_fast_path_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import conveyor.data.hashing, conveyor.data.snapshot, conveyor.data.sources\n"
        "import conveyor.data.state, conveyor.pipeline.fastpath, conveyor.store.records\n"
        "import conveyor.cli.fastrun, conveyor.cli.main\n"
        "heavy = {'sqlalchemy', 'pandas', 'pyarrow', 'pydantic', 'typer', 'fsspec', 'numpy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.strip() == "[]"


def test_configuration_md_is_generated_from_the_config_models() -> None:
    from conveyor.config.reference import REGENERATE, reference

    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    # reference() also refuses a key without a description, so every key has one.
    assert text == reference(), f"docs/configuration.md is out of date; run: {REGENERATE}"
