"""Build the Lambda artifact once, deterministically: ``dist/function.zip`` and ``dist/layer.zip`` (the stream
handler and the backfill), ``dist/curator.zip`` and ``dist/curator-layer.zip`` (the curator).

- ``function.zip`` holds ``pipeline/`` only (sources and schemas, no bytecode).
- ``curator.zip`` holds ``curator/`` and the ``pipeline/`` contract it shares (schema, Parquet writer, config).
- ``curator-layer.zip`` holds the runtime dependencies plus the ``curator`` dependency group (pyiceberg,
  pyiceberg-core), without pyiceberg's command-line-only dependencies (``CURATOR_CLI_ONLY``: click, rich and what
  only rich needs) and zstandard's cffi backend (its C backend is the one that loads), built the same way.
- ``layer.zip`` holds the locked runtime dependencies under ``python/``, installed for the Lambda platform
  (Python 3.12, arm64, binary wheels only: manylinux_2_28, or manylinux2014 for packages such as pybase64 that
  publish nothing newer; the versions are pinned by the lock, so an older tag can never bring an older release,
  and every extension module is checked to be built for aarch64 and CPython 3.12). boto3 and what only boto3
  needs are left out: the Lambda runtime ships them, and botocore alone would take ~100 MB of the 250 MB
  unzipped limit.

Both zips have sorted entries, fixed timestamps and fixed permissions, so the same inputs give the same bytes
(and the same hash: ``pulumi preview`` shows no change). The same artifact is promoted to every stack.

``function.zip`` is built from the files git tracks under ``pipeline/``: an untracked scratch file never ships,
and uncommitted changes to tracked files are refused unless ``--allow-dirty`` (so the same commit always gives
the same bytes).

Every function's unzipped size, its code plus its layer, is checked under Lambda's 250 MiB
(``check_function_sizes``); the build fails naming the function otherwise.

Usage: ``python -m ops.package [--out dist] [--skip-layer] [--allow-dirty] [--dry-run]`` (``make package``).
An unknown option is refused (exit 2) before anything is written; ``--dry-run`` writes nothing, in ``dist/`` neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.artifacts import CURATOR_LAYER_ZIP, CURATOR_ZIP, FUNCTION_ZIP, LAYER_ZIP
from components.settings import PROJECT_ROOT
from ops.cli import CommandParser, user_error

__all__ = [
    "CURATOR_CLI_ONLY",
    "FUNCTION_LAYERS",
    "LAMBDA_PLATFORMS",
    "LAMBDA_PYTHON",
    "LAMBDA_UNZIPPED_LIMIT",
    "RUNTIME_PROVIDED",
    "PackageError",
    "build_curator_zip",
    "build_function_zip",
    "build_layer_zip",
    "check_extensions",
    "check_function_sizes",
    "curator_layer_requirements",
    "deterministic_zip",
    "layer_requirements",
    "main",
    "tracked_files",
]

# Wheel platform tags the Lambda runtime (Amazon Linux 2023, glibc 2.34, arm64) can load, best first.
LAMBDA_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64")
LAMBDA_PYTHON = ("3.12", "cp")
_EXTENSION = re.compile(r"\.cpython-(\d+)-([a-z0-9_]+)-linux-gnu\.so$")
# Installed in the Lambda Python runtime already; dropped with everything only they need.
RUNTIME_PROVIDED = frozenset({"boto3"})
# pyiceberg's command line (``pyiceberg.cli``) and only it needs these; the curator never imports it. What only rich
# needs (pygments, markdown-it-py, mdurl) goes with it.
CURATOR_CLI_ONLY = frozenset({"click", "rich"})
# zstandard ships a C and a cffi backend; it loads the C one, and the cffi one would need cffi (not in the layer).
_CURATOR_LAYER_DROPPED_FILES = ("zstandard/backend_cffi",)
# Lambda's limit on a function's unzipped code plus layers: 250 MiB.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Each deployed function: (its code zip, its layer zip), as the program declares them.
FUNCTION_LAYERS = {
    "stream processor": (FUNCTION_ZIP, LAYER_ZIP),
    "backfill": (FUNCTION_ZIP, LAYER_ZIP),
    "curator": (CURATOR_ZIP, CURATOR_LAYER_ZIP),
}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_PARTS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_VIA = re.compile(r"^#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*$")


@dataclass(frozen=True)
class Built:
    """A zip that was written: path, size and SHA-256."""

    path: Path
    size: int
    sha256: str


def _files(root: Path) -> list[Path]:
    """Files under ``root``, sorted by their POSIX relative path, without bytecode or caches."""
    found = [
        path
        for path in root.rglob("*")
        if path.is_file()
        and not _SKIPPED_PARTS.intersection(path.relative_to(root).parts)
        and not path.name.endswith(_SKIPPED_SUFFIXES)
    ]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def deterministic_zip(entries: Iterable[tuple[str, Path]], destination: Path) -> Built:
    """Write ``(archive name, file)`` entries sorted by name, with fixed times and permissions."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda entry: entry[0])
    with tempfile.NamedTemporaryFile(dir=destination.parent, suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name, path in ordered:
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.create_system = 3  # Unix, so the permission bits below are honoured
                mode = 0o755 if os.access(path, os.X_OK) and path.suffix not in (".py", ".json", ".avsc") else 0o644
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        temporary.chmod(0o644)
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)
    data = destination.read_bytes()
    return Built(destination, len(data), hashlib.sha256(data).hexdigest())


class PackageError(RuntimeError):
    """The artifact cannot be built from what the commit holds (not a git checkout, or ``pipeline/`` is dirty)."""


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PackageError("git is not installed: the artifact is built from git-tracked files only") from None
    if done.returncode != 0:
        raise PackageError(f"git {' '.join(args)} failed in {root}: {done.stderr.strip()}")
    return done.stdout


def tracked_files(root: Path, folder: str = "pipeline", *, allow_dirty: bool = False) -> list[Path]:
    """The git-tracked files under ``folder`` (untracked files never ship); refuses local changes to them
    unless ``allow_dirty`` (then tracked files are taken as they are on disk)."""
    changes = _git(root, "status", "--porcelain", "--untracked-files=no", "--", folder).splitlines()
    if changes and not allow_dirty:
        listed = ", ".join(line[3:] for line in changes[:5]) + (" ..." if len(changes) > 5 else "")
        raise PackageError(
            f"{folder}/ has uncommitted changes ({listed}): commit them, or pass --allow-dirty to build "
            "an artifact no commit holds"
        )
    names = _git(root, "ls-files", "-z", "--", folder).split("\0")
    files = [root / name for name in names if name]
    return [
        path
        for path in files
        if path.is_file() and not _SKIPPED_PARTS.intersection(path.parts) and not path.name.endswith(_SKIPPED_SUFFIXES)
    ]


def build_function_zip(destination: Path, root: Path = PROJECT_ROOT, *, allow_dirty: bool = False) -> Built:
    """``pipeline/`` and nothing else, as the function's code: the files git tracks, as the commit holds them."""
    files = tracked_files(root, "pipeline", allow_dirty=allow_dirty)
    entries = [(path.relative_to(root).as_posix(), path) for path in files]
    if not any(name == "pipeline/handler.py" for name, _ in entries):
        print("warning: pipeline/handler.py does not exist yet", file=sys.stderr)
    return deterministic_zip(entries, destination)


def build_curator_zip(destination: Path, root: Path = PROJECT_ROOT, *, allow_dirty: bool = False) -> Built:
    """``curator/`` and ``pipeline/`` (the contract it shares), as the curator's code: the files git tracks."""
    files = [
        *tracked_files(root, "curator", allow_dirty=allow_dirty),
        *tracked_files(root, "pipeline", allow_dirty=allow_dirty),
    ]
    return deterministic_zip([(path.relative_to(root).as_posix(), path) for path in files], destination)


def check_function_sizes(unzipped: dict[str, int], functions: dict[str, tuple[str, str]] = FUNCTION_LAYERS) -> None:
    """Raise ``PackageError`` naming every function whose code plus layer, unzipped, exceeds 250 MiB.

    ``unzipped`` maps zip names to their unzipped size; a zip not built (``--skip-layer``) is not checked."""
    over = []
    for function, parts in functions.items():
        if all(part in unzipped for part in parts):
            total = sum(unzipped[part] for part in parts)
            if total > LAMBDA_UNZIPPED_LIMIT:
                over.append(f"{function} {total / 2**20:.1f} MiB ({' + '.join(parts)})")
    if over:
        raise PackageError(f"unzipped above Lambda's 250 MiB: {', '.join(over)}")


def _uv() -> list[str]:
    """How to call uv: the binary ``uv run`` exported, one on PATH, or the module of the system Python."""
    if os.environ.get("UV"):
        return [os.environ["UV"]]
    if shutil.which("uv"):
        return ["uv"]
    return ["python3", "-m", "uv"]


def _parse_export(text: str) -> dict[str, tuple[str, set[str]]]:
    """``uv export`` text -> {name: (pinned requirement, names of what needs it)}."""
    packages: dict[str, tuple[str, set[str]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        match = _REQUIREMENT.match(line)
        if match:
            current = match.group(1).lower()
            packages[current] = (line, set())
            continue
        via = _VIA.match(line)
        if via and current is not None and via.group(1).lower() != "via":
            packages[current][1].add(via.group(1).lower())
    return packages


def layer_requirements(export_text: str, runtime_provided: Iterable[str] = RUNTIME_PROVIDED) -> list[str]:
    """Pinned requirements for the layer: the export minus what the runtime provides and what only it needs."""
    packages = _parse_export(export_text)
    dropped = {name.lower() for name in runtime_provided}
    changed = True
    while changed:
        changed = False
        for name, (_, needed_by) in packages.items():
            if name not in dropped and needed_by and needed_by <= dropped:
                dropped.add(name)
                changed = True
    return sorted(requirement for name, (requirement, _) in packages.items() if name not in dropped)


def export_runtime_requirements(root: Path = PROJECT_ROOT, *, groups: Sequence[str] = ()) -> str:
    """The locked runtime dependencies (``uv export --no-dev --no-hashes --no-emit-project``), with ``groups``
    (dependency groups, e.g. ``curator``) added."""
    selection = ["--no-default-groups", *(f"--group={group}" for group in groups)] if groups else ["--no-dev"]
    command = [*_uv(), "export", "--frozen", *selection, "--no-hashes", "--no-emit-project"]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


def curator_layer_requirements(export_text: str) -> list[str]:
    """The curator layer's pins: the export of the runtime and ``curator`` groups, minus what the runtime provides,
    pyiceberg's command-line-only dependencies, and what only those need."""
    return layer_requirements(export_text, RUNTIME_PROVIDED | CURATOR_CLI_ONLY)


def _trim(site: Path) -> None:
    """Drop what differs between machines or never runs in Lambda: scripts, install records, caches."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for path in sorted(site.rglob("*")):
        if path.is_dir() and path.name == "__pycache__":
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.parent.name.endswith(".dist-info") and path.name in ("RECORD", "INSTALLER"):
            path.unlink()


def build_layer_zip(
    destination: Path,
    requirements: Sequence[str],
    *,
    work_dir: Path,
    pip_args: Sequence[str] = (),
    dropped_files: Sequence[str] = (),
) -> Built:
    """Install ``requirements`` for the Lambda platform into ``python/`` and zip it deterministically."""
    python_version, implementation = LAMBDA_PYTHON
    site = work_dir / "python"
    shutil.rmtree(work_dir, ignore_errors=True)
    site.mkdir(parents=True)
    requirements_file = work_dir / "requirements.txt"
    requirements_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--no-deps",  # the export is already the complete, locked closure
        *[option for platform in LAMBDA_PLATFORMS for option in ("--platform", platform)],
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        implementation,
        "--target",
        str(site),
        "-r",
        str(requirements_file),
        *pip_args,
    ]
    subprocess.run(command, check=True)
    check_extensions(site)
    _trim(site)
    entries = [
        (path.relative_to(work_dir).as_posix(), path)
        for path in _files(site)
        if not path.relative_to(site).as_posix().startswith(tuple(dropped_files))
    ]
    return deterministic_zip(entries, destination)


def check_extensions(site: Path) -> None:
    """Fail unless every compiled extension module under ``site`` is for CPython 3.12 on aarch64 Linux."""
    wanted = ("".join(LAMBDA_PYTHON[0].split(".")), "aarch64")
    wrong = [
        path.relative_to(site).as_posix()
        for path in site.rglob("*.so")
        if (match := _EXTENSION.search(path.name)) is not None and match.groups() != wanted
    ]
    if wrong:
        raise RuntimeError(f"layer holds extension modules not built for cp312 aarch64: {', '.join(sorted(wrong))}")


def _report(built: Built, unzipped: int | None = None) -> str:
    extra = f", {unzipped / 1e6:.1f} MB unzipped" if unzipped is not None else ""
    return f"{built.path} {built.size / 1e6:.1f} MB{extra} sha256={built.sha256}"


def _unzipped_size(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(info.file_size for info in archive.infolist())


PROG = "python -m ops.package"


def _build_layer(out: Path, name: str, requirements: list[str], work: str, dropped: Sequence[str] = ()) -> Built:
    """One layer, installed under ``build/<work>``."""
    return build_layer_zip(out / name, requirements, work_dir=PROJECT_ROOT / "build" / work, dropped_files=dropped)


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "dist", help="output directory (default dist/)")
    parser.add_argument("--skip-layer", action="store_true", help="build the code zips only")
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="build even with uncommitted changes to pipeline/ or curator/ (never deploy it)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check what would be packaged and say so; write nothing (dist/ neither)"
    )
    args = parser.parse_args(argv)  # an unknown option is a mistake (one line, exit 2), never passed on to pip
    out: Path = args.out
    try:
        files = tracked_files(PROJECT_ROOT, "pipeline", allow_dirty=args.allow_dirty)
        curator_files = tracked_files(PROJECT_ROOT, "curator", allow_dirty=args.allow_dirty)
        if args.dry_run:
            described = (
                ""
                if args.skip_layer
                else f" and {out / LAYER_ZIP} (the locked runtime dependencies, arm64) and {out / CURATOR_LAYER_ZIP}"
                " (the curator's: pyiceberg without its command line)"
            )
            print(
                f"dry run: would write {out / FUNCTION_ZIP} ({len(files)} git-tracked files of pipeline/), "
                f"{out / CURATOR_ZIP} ({len(curator_files)} of curator/ and pipeline/'s){described} "
                f"and {out / 'manifest.json'}; nothing written"
            )
            return 0
        function = build_function_zip(out / FUNCTION_ZIP, allow_dirty=args.allow_dirty)
        curator = build_curator_zip(out / CURATOR_ZIP, allow_dirty=args.allow_dirty)
    except PackageError as error:
        return user_error(PROG, str(error))
    manifest: dict[str, object] = {}
    unzipped: dict[str, int] = {}
    for name, built in ((FUNCTION_ZIP, function), (CURATOR_ZIP, curator)):
        print(_report(built))
        manifest[name] = {"sha256": built.sha256, "size": built.size}
        unzipped[name] = _unzipped_size(built.path)
    if not args.skip_layer:
        try:
            runtime = layer_requirements(export_runtime_requirements())
            curator_runtime = curator_layer_requirements(export_runtime_requirements(groups=("curator",)))
            dropped = _CURATOR_LAYER_DROPPED_FILES
            layers: list[tuple[str, list[str], Built]] = [
                (LAYER_ZIP, runtime, _build_layer(out, LAYER_ZIP, runtime, "layer")),
                (
                    CURATOR_LAYER_ZIP,
                    curator_runtime,
                    _build_layer(out, CURATOR_LAYER_ZIP, curator_runtime, "curator-layer", dropped),
                ),
            ]
        except subprocess.CalledProcessError as error:  # uv or pip failed (no package index): their lines are above
            print(f"{PROG}: {' '.join(error.cmd[:4])} ... exited {error.returncode}: layers not built", file=sys.stderr)
            return 1
        for name, requirements, layer_zip in layers:
            unzipped[name] = _unzipped_size(layer_zip.path)
            print(_report(layer_zip, unzipped[name]))
            print(f"{name} requirements: " + ", ".join(requirements))
            manifest[name] = {
                "sha256": layer_zip.sha256,
                "size": layer_zip.size,
                "unzipped_size": unzipped[name],
                "requirements": requirements,
            }
    try:
        check_function_sizes(unzipped)
    except PackageError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
