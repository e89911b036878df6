"""A Pipedrive v2 stage change moves ``salespulse_stage_entries_total`` end to end."""

from __future__ import annotations

import pytest

from salespulse.embedded.broker import EmbeddedBroker
from tests.integration.stack import SalespulseProcess
from tests.integration.test_crm_webhooks import pipedrive_v2, post_pipedrive, stack, wait_for_metric  # noqa: F401

pytestmark = pytest.mark.integration


async def test_a_pipedrive_v2_stage_change_moves_stage_entries(stack: SalespulseProcess,  # noqa: F811
                                                               fresh_broker: EmbeddedBroker) -> None:
    deal = {"id": 78, "title": "Acme", "value": 900, "currency": "EUR", "status": "open", "stage_id": 3,
            "pipeline_id": 1, "owner_id": 42, "person_id": 9}
    assert await post_pipedrive(stack.url, pipedrive_v2("pd-stage-1", "deal", "change", deal, {"stage_id": 2})) == 200
    await wait_for_metric(stack.url, "salespulse_stage_entries_total", 1, pipeline="smb", stage="proposal",
                          timeout_s=15)
