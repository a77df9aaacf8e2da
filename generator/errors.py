"""Every error Nexus raises on purpose.

The hierarchy::

    NexusError                      root: the CLI prints it and exits 1, no traceback
    ├── CatalogError(ValueError)    the catalog is unusable; carries a list of Problems
    ├── TemplateError               a template failed to render (template, line, service)
    ├── OutputCheckError            rendered output broke a pre-write check (service, file)
    ├── DriftError                  generated/ differs from what the catalog renders
    ├── HandEditedError             a generated file was edited by hand; refuse to overwrite
    │   └── EditedDuringRun         ... while the run was writing, after it had compared the tree
    ├── OutputError                 the output folder cannot be read or written (a link, read-only, disk full,
    │   │                           permission): nothing changed, no partial copy left
    │   └── OutputBusy              another run held the output folder's lock too long (names its pid)
    ├── RunError                    `nexus up/down/verify` could not do its job
    │   ├── AlreadyRunning          a run recorded in .nexus/run is still alive
    │   ├── NotRunning              nothing recorded runs (status, restart, down SERVICE)
    │   ├── PortsInUse              catalog ports taken, found before anything starts
    │   ├── ServiceFailed           a service did not start or become ready (its log tail)
    │   │   └── InfrastructureFailed  a server of stage 1 (PostgreSQL, Redis, NATS) did not start
    │   └── VerifyFailed            a flow or a service failed verification (names each)
    ├── OverlayError                a kustomize overlay cannot be built, or disagrees with the plan
    ├── ClusterError                talking to a cluster failed; one line naming the context and the fix
    │   ├── KubeconfigError         no kubeconfig, no such context, or a broken one
    │   ├── UnreachableError        the API server did not answer (refused, DNS, timeout)
    │   ├── CertificateError        it answered with a certificate the kubeconfig does not trust
    │   ├── UnauthorizedError       401: the credentials were rejected
    │   ├── ForbiddenError          403: RBAC does not allow a verb
    │   ├── NamespaceTerminatingError 403 from NamespaceLifecycle: the namespace is being deleted
    │   └── ApplyError              the API server rejected one object (invalid, unknown kind, ...)
    ├── RolloutError                a wave did not roll out: names the service, shows its pods
    ├── DeployInterrupted           Ctrl-C: stopped after the current apply, says what was applied
    ├── RefusedError                `nexus new` refused a service; nothing was changed
    ├── DiffError                   `nexus diff` could not read its base (git ref, base catalog)
    └── MissingExtra                a command needs an extra of the package that is not installed

Library errors (YAML, pydantic, Jinja, the kubernetes client, urllib3) never escape: each stage
translates them at its boundary with ``raise ... from``. An error may carry ``exit_code`` (the
CLI's exit status, 1 unless said otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the catalog, located precisely enough to fix it."""

    line: int  # 1-based; 0 when the problem has no single place (e.g. an empty file)
    column: int  # 1-based
    path: str  # dotted key path, e.g. "services.auth-service.port"
    message: str  # what is wrong, and what would be right
    file: str = field(default="catalog.yaml", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        path = f" {self.path}:" if self.path else ""
        return f"{where}:{path} {self.message}"


def not_utf8(text: str) -> str | None:
    """What keeps ``text`` (an argument) out of a UTF-8 file, or None. Python reads a byte of the
    command line that is not UTF-8 as a lone surrogate (U+DC80..U+DCFF for bytes 0x80..0xFF),
    which no UTF-8 file can hold."""
    code = next((ord(ch) for ch in text if 0xD800 <= ord(ch) <= 0xDFFF), None)
    if code is None:
        return None
    return f"byte 0x{code - 0xDC00:02x} is not UTF-8" if code >= 0xDC80 else f"U+{code:04X} is a lone surrogate"


def printable(text: str) -> str:
    """``text`` from outside Nexus (another process's command line, a lock file's note) as a
    message may hold it: each control character but a tab shown as its escape (a newline as
    \\n, ESC as \\x1b), so none breaks the line or is acted on by the terminal."""
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in text)


class NexusError(Exception):
    """Root of every error Nexus raises deliberately."""


class CatalogError(NexusError, ValueError):
    """The catalog cannot be used. ``problems`` lists every issue found in one run."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(NexusError):
    """A template failed to render; the message names the template, its line and the service."""


class OutputCheckError(NexusError):
    """Rendered output failed a check that runs before anything is written."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__(
            "generated output failed its checks; nothing was written:\n" + "\n".join(f"  {f}" for f in failures)
        )


class DriftError(NexusError):
    """`generate --check` found files that are missing, stale, extra or hand-edited."""

    def __init__(self, report: dict[str, list[str]], out: object = "generated/") -> None:
        """``out``: the output folder checked (its path, as the run's other messages name it)."""
        self.report = report
        lines = [f"  {state}: {path}" for state, paths in report.items() for path in paths]
        super().__init__(f"{out} is out of date with the catalog (run `nexus generate`):\n" + "\n".join(lines))


class HandEditedError(NexusError):
    """A generated file was changed by hand; `--force` overwrites it after a backup.

    ``team_files`` are the files the services concerned give their team (the render stage's
    one list): where a change to a service belongs instead."""

    def __init__(
        self, paths: list[str], team_files: list[str] | tuple[str, ...] = (), added: list[str] | tuple[str, ...] = ()
    ) -> None:
        """``paths``: every file refused; of them, ``added`` are files Nexus never wrote, not edits."""
        self.paths = paths
        edited = [p for p in paths if p not in set(added)]
        owned = ", ".join(team_files)
        where = f"into the team-owned files ({owned}), which Nexus never touches, or " if team_files else ""
        said = []
        if edited:
            said.append(
                "these generated files were edited by hand and would be overwritten:\n"
                + "".join(f"  {p}\n" for p in edited)
                + f"move the change {where}into catalog.yaml"
            )
        if added:
            said.append(
                "these files were added by hand and would be removed:\n"
                + "".join(f"  {p}\n" for p in added)
                + "move them out of the output folder"
            )
        super().__init__(
            ";\n".join(said) + "; or run `nexus generate --force` to overwrite or remove them: each is first "
            "copied to .nexus/backups/<date-time>/<its path under generated/>, in a new folder the run prints"
        )


class EditedDuringRun(HandEditedError):
    """Files the run was about to replace or remove changed, or appeared where it creates one,
    after it had compared the tree and before its swap: nothing was written."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        listed = "\n".join(f"  {p}" for p in paths)
        NexusError.__init__(
            self,
            "these generated files changed while this run was writing (after it had compared them):\n"
            f"{listed}\nnothing was written and they are as they were left; run `nexus generate` again "
            "(a file still edited by hand is then named, with what to do)",
        )


class OutputError(NexusError):
    """The output folder could not be read or written. One line: what, where, the fix; the old
    tree is intact and no partial copy is left (the next run also removes one a kill left)."""


class OutputBusy(OutputError):
    """Another run held the output folder's lock longer than this run would wait."""


class RunError(NexusError):
    """The local runner (`nexus up`, `down`, `status`, `verify`) failed."""


class OverlayError(NexusError):
    """A kustomize overlay could not be built, or its sync-waves disagree with the plan."""


class ClusterError(NexusError):
    """Talking to the cluster failed. The message is one line: the context, what failed, the fix."""


class KubeconfigError(ClusterError):
    """No kubeconfig, no such context in it, or one the client cannot read."""


class UnreachableError(ClusterError):
    """The API server of the context did not answer."""


class CertificateError(ClusterError):
    """The API server answered, but with a certificate the kubeconfig's CA does not vouch for."""


class UnauthorizedError(ClusterError):
    """The API server rejected the context's credentials (401)."""


class ForbiddenError(ClusterError):
    """RBAC forbids a verb the deploy needs (403)."""


class NamespaceTerminatingError(ClusterError):
    """403 from the NamespaceLifecycle admission: the namespace is being deleted, not an RBAC refusal."""


class ApplyError(ClusterError):
    """The API server refused one object: invalid, of a kind it does not serve, or in conflict."""


class RolloutError(NexusError):
    """A wave's Deployments did not become Available: names each service and shows its pods."""


class DeployInterrupted(NexusError):
    """Ctrl-C during a deploy: it stopped after the apply in flight. ``applied`` lists what was sent."""

    exit_code = 130

    def __init__(self, message: str, applied: list[str]) -> None:
        self.applied = applied
        super().__init__(message)


class RefusedError(NexusError):
    """`nexus new` will not add the service; catalog.yaml and generated/ are left as they were."""

    def __init__(self, name: str, reasons: list[str]) -> None:
        self.name = name
        self.reasons = reasons
        super().__init__(
            f"cannot add '{name}'; catalog.yaml and generated/ are unchanged:\n" + "\n".join(f"  {r}" for r in reasons)
        )


class DiffError(NexusError):
    """`nexus diff` could not read the catalog at its base git ref."""


class AlreadyRunning(RunError):
    """`nexus up` found a live run; it never starts a second one over it."""


class NotRunning(RunError):
    """The command needs a running platform and none is recorded (or it is gone)."""


class PortsInUse(RunError):
    """Ports the run needs are taken; raised before anything starts."""

    def __init__(self, taken: list[tuple[str, int, str | None]]) -> None:
        self.taken = taken
        lines = [
            f"  port {port} ({name}) is in use" + (f" by {holder}" if holder else "") for name, port, holder in taken
        ]
        super().__init__(
            "nothing was started; ports the platform needs are taken:\n"
            + "\n".join(lines)
            + "\nstop what holds them, or change the ports in the catalog"
        )


class ServiceFailed(RunError):
    """A service failed to start or to become ready; carries the last lines of its log."""

    def __init__(self, service: str, reason: str, log: str, lines: list[str], after: str = "") -> None:
        self.service, self.reason, self.log, self.lines = service, reason, log, lines
        shown = "\n".join(f"  | {line}" for line in lines) or "  (the log is empty)"
        super().__init__(f"{service}: {reason}\nlast lines of {log}:\n{shown}" + (f"\n{after}" if after else ""))


class InfrastructureFailed(ServiceFailed):
    """A server of stage 1 (PostgreSQL, Redis, NATS) failed to start; names it and its log."""


class VerifyFailed(RunError):
    """Verification found failures; each line names the broken hop or service."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__(f"verify failed ({len(failures)}):\n" + "\n".join(f"  {f}" for f in failures))


class MissingExtra(NexusError):
    """A command needs libraries from an optional part of Nexus (a pip extra: run, deploy)."""
