"""Deployment definitions of the re-audit flow (flows/reaudit.py): one per config, on a cron or interval schedule.

``medaudit serve --config audit.yaml --cron "0 3 * * *"`` serves one (``reaudit_deployment`` +
``prefect.serve``); ``medaudit serve --deployments deployments/schedules.yaml`` serves those the file lists.
See docs/OPERATIONS.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flows.reaudit import load_audit_config, reaudit_flow
from tasks.config import AuditConfig
from tasks.errors import ConfigError


def reaudit_deployment(
    cfg: AuditConfig,
    name: str,
    *,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str | None = None,
    force: bool = False,
    paused: bool | None = None,
):
    """A RunnerDeployment of ``reaudit_flow`` for ``cfg`` on a cron or interval schedule (ready for prefect.serve)."""
    from datetime import timedelta

    from prefect.schedules import Cron, Interval
    from prefect.types.entrypoint import EntrypointType

    if cron and interval:
        raise ConfigError(f"deployment {name!r}: give a cron or an interval schedule, not both")
    schedules = []
    if cron:
        schedules.append(Cron(cron, timezone=timezone) if timezone else Cron(cron))
    elif interval:
        schedules.append(Interval(timedelta(seconds=float(interval))))
    return reaudit_flow.to_deployment(
        name=name,
        schedules=schedules or None,
        paused=paused,
        parameters={"config": cfg.model_dump(mode="json"), "force": force, "show_progress": False},
        description=f"Re-audit {cfg.dataset} from {cfg.raw_dir} into {cfg.results_dir} when its snapshot or pool changes (D20)",
        tags=["medaudit", cfg.dataset],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def deployments_from_file(path: Path, overrides: dict[str, Any] | None = None) -> list[Any]:
    """Deployments listed in a YAML file (see deployments/schedules.yaml); config paths relative to the file."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    entries = spec.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list under 'deployments:'")
    out = []
    for i, entry in enumerate(entries):
        unknown = set(entry) - {"name", "config", "cron", "interval", "timezone", "force", "paused"}
        if unknown or "name" not in entry or "config" not in entry:
            raise ConfigError(f"{path}: deployment {i}: needs 'name' and 'config'; unknown keys {sorted(unknown)}")
        config_path = Path(entry["config"])
        if not config_path.is_absolute():
            config_path = path.parent / config_path
        cfg = load_audit_config(config_path, overrides)
        out.append(
            reaudit_deployment(
                cfg,
                entry["name"],
                cron=entry.get("cron"),
                interval=entry.get("interval"),
                timezone=entry.get("timezone"),
                force=bool(entry.get("force", False)),
                paused=entry.get("paused"),
            )
        )
    return out
