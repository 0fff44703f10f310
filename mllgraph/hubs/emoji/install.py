"""The emoji world's install step: three pinned npm packages, fetched with `npm pack`, checked
against pinned integrity hashes and unpacked (only the files the styles need) into a cache.

The cache (`Settings.emoji_cache`, `MLLGRAPH_EMOJI_CACHE`, default `~/.cache/mllgraph/emoji`)
lies outside `MLLGRAPH_HOME` on purpose: every test run gets a fresh temporary home, and one
download should serve them all. Layout: `<cache>/<package>-<version>/package/...` plus a stamp
file naming the tarball's integrity; a package whose stamp matches is not fetched again, so
the step is idempotent and runs offline once done. Concurrent runs (parallel test sessions)
serialise on a lock file; a package is unpacked into a temporary folder and renamed into place,
so a half-unpacked package is never seen.

Only these three packages are ever fetched (`PACKAGES`): the reserved styles (see
`mllgraph.hubs.emoji`) have no entry, and `fetch` refuses any other name.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mllgraph.errors import FailedPrecondition, InvalidArgument

STAMP = ".installed"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    # `npm view <name>@<version> dist.integrity`, checked 2026-12-06: the tarball must match.
    integrity: str
    licence: str
    members: tuple[str, ...]  # path prefixes inside the tarball to unpack

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package(
            "openmoji",
            "17.0.0",
            "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
            "CC-BY-SA-4.0",
            ("package/color/svg/", "package/data/openmoji.json", "package/package.json"),
        ),
        Package(
            "fluentui-emoji",
            "1.3.0",
            "sha512-JTXXwqIie2rWTgOkIJDJxr0WtwTz2WU4kdOq8buLVThYwQ264aFR2jdTyuon2oEbLqqGMT64zI4btyn1saB2xw==",
            "MIT",
            ("package/icons/flat/", "package/icons/modern/", "package/LICENSE"),
        ),
        Package(
            "emoji-datasource-twitter",
            "16.0.0",
            "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
            "MIT (package), CC-BY-4.0 (Twemoji graphics)",
            ("package/img/twitter/64/", "package/emoji.json", "package/LICENSE"),
        ),
    )
}


def package_dir(cache: Path, name: str) -> Path:
    """Where package `name` is (or would be) unpacked: its `package/` folder."""
    return cache / _package(name).folder / "package"


def is_installed(cache: Path, name: str) -> bool:
    pkg = _package(name)
    stamp = cache / pkg.folder / STAMP
    return stamp.is_file() and stamp.read_text().strip() == pkg.integrity


def missing(cache: Path) -> list[str]:
    """The packages not (completely) installed under `cache`."""
    return [name for name in PACKAGES if not is_installed(cache, name)]


def fetch(
    cache: Path,
    names: tuple[str, ...] | None = None,
    *,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Path]:
    """Install the packages (all, or `names`) under `cache` unless already there; their
    `package/` folders by name. Needs `npm` (and the registry) only for a missing package."""
    wanted = tuple(PACKAGES) if names is None else names
    for name in wanted:
        _package(name)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache):
        for name in wanted:
            if is_installed(cache, name):
                log(f"{name}: installed ({cache / PACKAGES[name].folder})")
                continue
            _install(cache, PACKAGES[name], log)
    return {name: package_dir(cache, name) for name in wanted}


def _package(name: str) -> Package:
    if name not in PACKAGES:
        raise InvalidArgument(
            f"emoji package {name!r} is not one of the pinned packages ({', '.join(PACKAGES)})"
        )
    return PACKAGES[name]


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def sri(data_path: Path) -> str:
    """The npm integrity string (`sha512-<base64>`) of a file."""
    digest = hashlib.sha512()
    with open(data_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _install(cache: Path, pkg: Package, log: Callable[[str], None]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise FailedPrecondition(
            f"emoji package {pkg.name}@{pkg.version} is not in {cache} and `npm` is not on "
            "PATH: install Node.js and npm (Debian: apt-get install npm), or copy a filled "
            "cache and point MLLGRAPH_EMOJI_CACHE at it"
        )
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{pkg.folder}.") as tmp:
        log(f"{pkg.name}: npm pack {pkg.name}@{pkg.version}")
        try:
            subprocess.run(
                [npm, "pack", f"{pkg.name}@{pkg.version}", "--silent"],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.CalledProcessError as e:
            raise FailedPrecondition(
                f"npm pack {pkg.name}@{pkg.version} failed (exit {e.returncode}): "
                f"{(e.stderr or '').strip()[-500:]}"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise FailedPrecondition(f"npm pack {pkg.name}@{pkg.version}: timed out") from e
        tarball = Path(tmp) / f"{pkg.name}-{pkg.version}.tgz"
        if not tarball.is_file():
            raise FailedPrecondition(f"npm pack {pkg.name}@{pkg.version} wrote no {tarball.name}")
        got = sri(tarball)
        if got != pkg.integrity:
            raise FailedPrecondition(
                f"{tarball.name}: integrity {got} differs from the pinned {pkg.integrity}; "
                "refusing to unpack it"
            )
        staging = Path(tmp) / "unpacked"
        count = _extract(tarball, staging, pkg.members)
        (staging / STAMP).write_text(pkg.integrity + "\n")
        target = cache / pkg.folder
        if target.exists():  # a stale or partial earlier install
            shutil.rmtree(target)
        staging.rename(target)
        log(f"{pkg.name}: {count} files unpacked into {target}")


def _extract(tarball: Path, into: Path, members: tuple[str, ...]) -> int:
    """Unpack the regular files of `tarball` under the `members` prefixes; their count."""
    into.mkdir()
    count = 0
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            chosen = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(members)]
            # filter="data" refuses absolute paths, '..' and links out of the folder.
            tar.extractall(into, members=chosen, filter="data")
            count = len(chosen)
    except (tarfile.TarError, OSError) as e:
        raise FailedPrecondition(f"{tarball.name}: cannot be unpacked ({e})") from e
    if count == 0:
        raise FailedPrecondition(f"{tarball.name}: none of {members} found inside")
    return count


def cache_bytes(cache: Path) -> int:
    """Bytes of every file under `cache` (packages and rasters)."""
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
