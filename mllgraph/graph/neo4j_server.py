"""The project-managed local Neo4j: fetched from Maven Central, run from its jars.

No Docker engine and no Neo4j package exist on our machines, so the project runs Neo4j
Community itself: Maven copies the runtime closure of `org.neo4j:neo4j` into
`$MLLGRAPH_HOME/neo4j/lib`, and we start the server's own entry point
(`org.neo4j.server.CommunityEntryPoint`) with a generated `neo4j.conf`. The bootloader that
would read JVM flags from neo4j.conf is bypassed, so heap and JVM flags go on the `java`
command line here. Bolt listens on 127.0.0.1 only; HTTP is off.

Its password is random, made on first use and kept in `<home>/neo4j/password` (0600; see
`mllgraph.settings.local_password`), unless NEO4J_PASSWORD is set. A server first started
before that (with the README's old default, which every local user could read) gets a random
password the next time `start` launches it (`rotate_password`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from mllgraph.errors import FailedPrecondition, Unavailable
from mllgraph.graph.user_query import ALLOWED_PROCEDURES
from mllgraph.settings import Settings, has_legacy_database, password_file, write_password

NEO4J_VERSION = "5.26.30"
SUPPORTED_JAVA = (17, 21)  # Neo4j 5.26 LTS runs on Java 17 and 21
MAIN_CLASS = "org.neo4j.server.CommunityEntryPoint"
log = logging.getLogger(__name__)
DEFAULT_PASSWORD = "neo4j"  # Neo4j's initial password, changed on first start
# Procedures the local server loads (`dbms.security.procedures.allowlist`) are the ones
# `mllgraph query` allows (`user_query.ALLOWED_PROCEDURES`): schema look-ups; the project's
# own statements call none. Neo4j applies this list to plugin procedures (apoc, gds, ...)
# only: its built-in ones (`dbms.listConfig`, ...) stay callable, which is why
# `mllgraph.graph.user_query` refuses them before a query reaches any server.

# The flags Neo4j's own launcher adds (see its neo4j.conf `server.jvm.additional`).
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
]


@dataclass(frozen=True)
class ServerPaths:
    root: Path

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def import_dir(self) -> Path:
        """An empty folder: the only place `LOAD CSV` could read, and file URLs are off."""
        return self.root / "import"

    @property
    def pid_file(self) -> Path:
        return self.root / "neo4j.pid"

    @property
    def console_log(self) -> Path:
        return self.logs / "console.log"

    @property
    def fetched_marker(self) -> Path:
        return self.lib / f".fetched-{NEO4J_VERSION}"


def paths(settings: Settings) -> ServerPaths:
    return ServerPaths(settings.neo4j_home)


# -- Java and the jars ---------------------------------------------------------------------


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(m.group(1)) if m else None


def find_java() -> str:
    """A Java that Neo4j 5.26 runs on: $MLLGRAPH_JAVA, $JAVA_HOME, `java`, or a JDK under
    /usr/lib/jvm, in that order."""
    candidates = [os.environ.get("MLLGRAPH_JAVA")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates.append(shutil.which("java"))
    candidates += [str(p / "bin" / "java") for p in sorted(Path("/usr/lib/jvm").glob("*"))]
    seen: list[str] = []
    for java in filter(None, candidates):
        if java in seen or not Path(java).exists():
            continue
        seen.append(java)
        if _java_major(java) in SUPPORTED_JAVA:
            return java
    raise FailedPrecondition(
        f"Neo4j {NEO4J_VERSION} needs Java 17 or 21; none found (tried {seen or 'nothing'}). "
        "Install one (`apt-get install openjdk-17-jre-headless`) or set MLLGRAPH_JAVA."
    )


def fetch_jars(settings: Settings) -> Path:
    """Copy Neo4j's runtime jars from Maven Central (cached in ~/.m2 and in lib/)."""
    p = paths(settings)
    if p.fetched_marker.exists():
        return p.lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FailedPrecondition(
            "Maven (`mvn`) is needed once to fetch Neo4j from Maven Central: "
            "`apt-get install maven`, or point NEO4J_URI at a Neo4j you run yourself."
        )
    p.lib.mkdir(parents=True, exist_ok=True)
    pom = resources.files("mllgraph.graph") / "neo4j-pom.xml"
    with resources.as_file(pom) as pom_path:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom_path),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={p.lib}",
            f"-Dneo4j.version={NEO4J_VERSION}",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
        raise FailedPrecondition(f"fetching Neo4j {NEO4J_VERSION} with Maven failed:\n{tail}")
    p.fetched_marker.write_text(NEO4J_VERSION)
    return p.lib


# -- Configuration, start, stop ------------------------------------------------------------


def write_config(settings: Settings) -> Path:
    p = paths(settings)
    for d in (p.conf_dir, p.data, p.logs, p.import_dir):
        d.mkdir(parents=True, exist_ok=True)
    allowlist = ",".join(ALLOWED_PROCEDURES)
    conf = f"""# Written by mllgraph; edits are overwritten on start.
server.default_listen_address=127.0.0.1
server.bolt.enabled=true
server.bolt.listen_address=127.0.0.1:{settings.local_neo4j_port}
server.http.enabled=false
server.https.enabled=false
dbms.usage_report.enabled=false
dbms.security.auth_enabled=true
server.memory.pagecache.size={settings.local_neo4j_pagecache}
db.tx_log.rotation.retention_policy=1 files
server.directories.data={p.data}
server.directories.logs={p.logs}
# Locked down (issue #12): LOAD CSV reads no host file and reaches no URL, no transaction
# runs for ever, and only the allow-listed plugin procedures load.
server.directories.import={p.import_dir}
dbms.security.allow_csv_import_from_file_urls=false
internal.dbms.cypher_ip_blocklist=0.0.0.0/0,::/0
db.transaction.timeout={settings.neo4j_transaction_timeout_s}s
dbms.security.procedures.allowlist={allowlist}
# One plan per query and parameter types, whatever the sizes of its list parameters: with
# size hints (the default) a 1-class read and a 3-class one are planned apart, ~1.5 s each
# for the candidates query, paid by whichever request first sends a list of a new size.
internal.cypher.use_parameter_size=false
"""
    path = p.conf_dir / "neo4j.conf"
    path.write_text(conf)
    return path


def running_pid(settings: Settings) -> int | None:
    """The recorded pid, if that process is still a Neo4j we started."""
    pid_file = paths(settings).pid_file
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (ValueError, OSError):
        pid_file.unlink(missing_ok=True)
        return None
    if MAIN_CLASS not in cmdline:
        pid_file.unlink(missing_ok=True)  # a stale pid now used by something else
        return None
    return pid


def log_tail(settings: Settings, lines: int = 25) -> str:
    p = paths(settings)
    chunks = []
    for f in (p.console_log, p.logs / "neo4j.log"):
        if f.exists():
            text = f.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {f} ---\n" + "\n".join(text))
    return "\n".join(chunks) or "(no log written)"


def _try_connect(settings: Settings) -> str:
    """'ok', 'auth' (wrong password), or 'down'."""
    import neo4j
    from neo4j.exceptions import AuthError, ServiceUnavailable

    try:
        # A plain session, not execute_query: that one retries for ~30 s when down.
        with (
            neo4j.GraphDatabase.driver(
                settings.bolt_uri,
                auth=(settings.neo4j_user, settings.neo4j_password),
                connection_timeout=2,
            ) as driver,
            driver.session(database=settings.neo4j_database) as session,
        ):
            session.run("RETURN 1").consume()
        return "ok"
    except AuthError:
        return "auth"
    except neo4j.exceptions.ClientError as e:
        if "CredentialsExpired" in (e.code or ""):
            return "auth"
        raise
    except (ServiceUnavailable, OSError):
        return "down"


def _change_password(settings: Settings, old: str, new: str) -> None:
    import neo4j

    with neo4j.GraphDatabase.driver(settings.bolt_uri, auth=(settings.neo4j_user, old)) as driver:
        driver.execute_query(
            "ALTER CURRENT USER SET PASSWORD FROM $old TO $new",
            old=old,
            new=new,
            database_="system",
        )


def _set_initial_password(settings: Settings) -> None:
    """A fresh Neo4j has neo4j/neo4j with a forced change: set the configured password."""
    import neo4j

    try:
        _change_password(settings, DEFAULT_PASSWORD, settings.neo4j_password)
    except neo4j.exceptions.AuthError as e:
        where = (
            "NEO4J_PASSWORD"
            if settings.neo4j_password_given is not None
            else f"the password in {password_file(settings.neo4j_home)}"
        )
        raise FailedPrecondition(
            f"the local Neo4j under {paths(settings).root} rejects {where} and is no "
            "longer fresh; use the password it was first started with, or stop it and "
            f"remove {paths(settings).data} to start over"
        ) from e


def rotate_password(settings: Settings) -> None:
    """Give the running project-managed server a new random password, kept in its folder
    (0600). The new password is written beside the file first (`password.pending`), so a
    crash between the change and the switch leaves it readable there."""
    if not settings.uses_local_neo4j or settings.neo4j_password_given is not None:
        raise FailedPrecondition(
            "rotate_password: only for the project-managed server without NEO4J_PASSWORD "
            "(a password you set is yours to change)"
        )
    old, new = settings.neo4j_password, secrets.token_urlsafe(24)
    file = password_file(settings.neo4j_home)
    pending = file.with_name(file.name + ".pending")
    write_password(pending, new)
    try:
        _change_password(settings, old, new)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    os.replace(pending, file)


def start(settings: Settings, *, timeout: float = 180.0) -> tuple[int, float]:
    """Start the local server (fetching jars on first use); returns (pid, seconds)."""
    if not settings.uses_local_neo4j:
        raise FailedPrecondition(
            f"NEO4J_URI is set ({settings.neo4j_uri}): that server is yours to run; "
            "unset NEO4J_URI to use the project-managed local Neo4j"
        )
    t0 = time.monotonic()
    pid = running_pid(settings)
    if pid is not None:
        _wait_ready(settings, pid, t0, timeout)
        return pid, time.monotonic() - t0
    if _try_connect(settings) != "down":
        raise FailedPrecondition(
            f"port {settings.local_neo4j_port} already answers Bolt, but not with a Neo4j "
            f"started from {paths(settings).root}; stop it, or set NEO4J_URI to use it, or "
            "choose another port with MLLGRAPH_NEO4J_PORT"
        )
    java = find_java()
    lib = fetch_jars(settings)
    conf = write_config(settings)
    p = paths(settings)
    heap = settings.local_neo4j_heap
    cmd = [
        java,
        f"-Xms{heap}",
        f"-Xmx{heap}",
        *JVM_FLAGS,
        "-cp",
        f"{lib}/*",
        MAIN_CLASS,
        f"--home-dir={p.root}",
        f"--config-dir={conf.parent}",
    ]
    with p.console_log.open("ab") as console:
        proc = subprocess.Popen(
            cmd,
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it
        )
    p.pid_file.write_text(str(proc.pid))
    _wait_ready(settings, proc.pid, t0, timeout)
    if settings.neo4j_password_given is None and has_legacy_database(settings.neo4j_home):
        # Launched here, so no client holds a session on it yet: a safe moment to change it.
        rotate_password(settings)
        log.warning(
            "neo4j_password_rotated home=%s: the README's old default password was replaced "
            "by a random one, kept in %s (0600); restart services started before this",
            p.root,
            password_file(settings.neo4j_home),
        )
    return proc.pid, time.monotonic() - t0


def _wait_ready(settings: Settings, pid: int, t0: float, timeout: float) -> None:
    while time.monotonic() - t0 < timeout:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            paths(settings).pid_file.unlink(missing_ok=True)
            raise Unavailable(f"Neo4j exited during start-up. Log tail:\n{log_tail(settings)}")
        state = _try_connect(settings)
        if state == "ok":
            return
        if state == "auth":
            _set_initial_password(settings)
            continue
        time.sleep(0.5)
    raise Unavailable(
        f"Neo4j did not answer on {settings.bolt_uri} within {timeout:.0f} s. "
        f"Log tail:\n{log_tail(settings)}"
    )


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def stop(settings: Settings, *, timeout: float = 60.0) -> bool:
    """Stop the server we started (by its recorded pid); False if none was running."""
    pid = running_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)  # Neo4j shuts down cleanly on SIGTERM
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child
    paths(settings).pid_file.unlink(missing_ok=True)
    return True


def status(settings: Settings) -> dict[str, object]:
    pid = running_pid(settings)
    return {
        "uri": settings.bolt_uri,
        "managed": settings.uses_local_neo4j,
        "pid": pid,
        "answers": _try_connect(settings) == "ok",
        "version": NEO4J_VERSION,
        "home": str(paths(settings).root),
    }


def scratch_settings(settings: Settings, home: Path, port: int) -> Settings:
    """A throwaway project-managed Neo4j beside the configured one: its own home and port,
    sharing the fetched jars (benchmarks and the test suite use this)."""
    scratch = replace(settings, neo4j_uri=None, home=home, local_neo4j_port=port)
    main_lib = fetch_jars(settings)
    lib = paths(scratch).lib
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.symlink_to(main_lib, target_is_directory=True)
    return scratch
