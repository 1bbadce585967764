"""`medaudit alerts`: the Prefect Automation that turns a re-audit's risk alert into a notification.

A re-audit past the limits of its config's ``alerts:`` section emits ``medaudit.risk.limit-exceeded``
(flows/alerts.py). This command creates, on the Prefect server at PREFECT_API_URL, an Automation that
sends a notification for each such event: to a webhook (``--webhook-url``: a CustomWebhookNotification
block is saved for it) or through an existing notification block (``--block slack-webhook/ops``).
"""

from __future__ import annotations

import argparse
import os

from tasks.errors import ConfigError

WEBHOOK_BLOCK = "medaudit-risk-alert"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="create the Prefect Automation that notifies when a re-audit exceeds its alert limits")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--webhook-url", help="POST each alert as JSON {subject, body} to this URL")
    to.add_argument("--block", help="an existing Prefect notification block, as TYPE/NAME (e.g. slack-webhook/ops)")
    p.add_argument("--dataset", default=None, help="only alerts of this dataset (default: every dataset)")
    p.add_argument("--api-url", default=None, help="Prefect API (default $PREFECT_API_URL)")
    p.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace) -> int:
    api_url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise ConfigError("automations live on a Prefect server: start one with `medaudit server` and set PREFECT_API_URL (or --api-url)")
    os.environ["PREFECT_API_URL"] = api_url
    from flows.runtime import check_prefect_api

    check_prefect_api()
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.alerts import EVENT, risk_alert_automation

    if args.webhook_url:
        block = CustomWebhookNotificationBlock(
            name="medaudit",
            url=args.webhook_url,
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
            allow_private_urls=True,  # a team's own webhook on the local network is the usual target
        )
        block_id = block.save(WEBHOOK_BLOCK, overwrite=True)
        target = f"webhook {args.webhook_url} (block custom-webhook/{WEBHOOK_BLOCK})"
    else:
        if "/" not in args.block:
            raise ConfigError(f"--block {args.block}: give TYPE/NAME, e.g. slack-webhook/ops (see `prefect block ls`)")
        block = Block.load(args.block)
        block_id = block._block_document_id
        target = f"block {args.block}"
    automation = risk_alert_automation(block_id, args.dataset).create()
    print(f"automation {automation.name!r} ({automation.id}) on {api_url}")
    print(f"  on event {EVENT}{' of ' + args.dataset if args.dataset else ''} -> notification to {target}")
    print("set limits in the audit config's `alerts:` section (see docs/OPERATIONS.md); they are checked by every re-audit")
    return 0
