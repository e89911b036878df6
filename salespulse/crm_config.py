"""The ``[crm]`` section of the config file: how each CRM's ids map to salespulse pipelines, stages and reps.

CRM webhooks are thin (a HubSpot ``dealstage`` change carries a stage id, nothing else), so whether a stage
is closed and won comes from this mapping, never from a stage's name. Every table is optional; see
``docs/crm.md`` and ``docs/config.example.toml``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(min_length=1, max_length=64)]
LeadStep = Literal["lead.created", "lead.qualified", "lead.converted"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageMapping(_Model):
    """One CRM stage: the salespulse pipeline and stage names, and whether it closes the deal (won or lost)."""

    pipeline: Name
    stage: Name
    closed: bool = False
    won: bool = False
    probability: float | None = Field(None, ge=0, le=1)
    #: The stage's place in its pipeline as the CRM orders it (HubSpot ``displayOrder``, Pipedrive
    #: ``order_nr``; yours for Salesforce): stage transitions are judged forward / backward by it.
    order: int | None = Field(None, ge=0, le=10_000)

    @model_validator(mode="after")
    def _won_is_closed(self) -> "StageMapping":
        if self.won and not self.closed:
            raise ValueError("a won stage must also be closed (closed = true)")
        return self


class VendorMapping(_Model):
    """``[crm.<vendor>]``: CRM pipeline ids → names, stage ids → :class:`StageMapping`, owner ids → rep ids."""

    #: The pipeline name for deals whose payload names no pipeline and whose stage is not mapped.
    pipeline: Name = "default"
    pipelines: dict[str, Name] = Field(default_factory=dict)
    stages: dict[str, StageMapping] = Field(default_factory=dict)
    owners: dict[str, Name] = Field(default_factory=dict)

    def stage_for(self, stage_id: str, pipeline_id: str | None = None) -> StageMapping:
        """The mapped stage; an unmapped one keeps its CRM id as its name and is open."""
        mapped = self.stages.get(stage_id)
        if mapped is not None:
            return mapped
        pipeline = self.pipelines.get(pipeline_id, pipeline_id) if pipeline_id else self.pipeline
        return StageMapping(pipeline=pipeline[:64], stage=stage_id[:64])

    def pipeline_for(self, pipeline_id: str | None) -> str:
        if not pipeline_id:
            return self.pipeline
        return self.pipelines.get(pipeline_id, pipeline_id)[:64]

    def rep_for(self, owner_id: str | None) -> str | None:
        """The rep id of a CRM owner/user id; an unmapped owner keeps its CRM id."""
        if owner_id is None or owner_id == "":
            return None
        return self.owners.get(owner_id, owner_id)


#: HubSpot's built-in "Sales Pipeline" (pipeline id ``default``): its stage ids are the same in every portal.
HUBSPOT_DEFAULT_STAGES: dict[str, StageMapping] = {
    "appointmentscheduled": StageMapping(pipeline="default", stage="appointmentscheduled", probability=0.2),
    "qualifiedtobuy": StageMapping(pipeline="default", stage="qualifiedtobuy", probability=0.4),
    "presentationscheduled": StageMapping(pipeline="default", stage="presentationscheduled", probability=0.6),
    "decisionmakerboughtin": StageMapping(pipeline="default", stage="decisionmakerboughtin", probability=0.8),
    "contractsent": StageMapping(pipeline="default", stage="contractsent", probability=0.9),
    "closedwon": StageMapping(pipeline="default", stage="closedwon", closed=True, won=True, probability=1.0),
    "closedlost": StageMapping(pipeline="default", stage="closedlost", closed=True, won=False, probability=0.0),
}


def _default_lifecycle() -> dict[str, LeadStep]:
    return {
        "marketingqualifiedlead": "lead.qualified",
        "opportunity": "lead.converted",
        "customer": "lead.converted",
    }


class HubSpotMapping(VendorMapping):
    """``[crm.hubspot]``: also which contact events start a lead and what each ``lifecyclestage`` value means."""

    #: ``contact.creation`` emits ``lead.created``; turn off to start leads at a lifecycle stage instead.
    contact_creation_is_lead: bool = True
    #: ``lifecyclestage`` value → canonical step. ``lead.converted`` needs the deal: see docs/crm.md.
    lifecycle: dict[str, LeadStep] = Field(default_factory=_default_lifecycle)

    def stage_for(self, stage_id: str, pipeline_id: str | None = None) -> StageMapping:
        mapped = self.stages.get(stage_id) or HUBSPOT_DEFAULT_STAGES.get(stage_id)
        return mapped if mapped is not None else super().stage_for(stage_id, pipeline_id)


class CrmSection(_Model):
    """``[crm]``: one optional table per vendor."""

    hubspot: HubSpotMapping = Field(default_factory=HubSpotMapping)
    pipedrive: VendorMapping = Field(default_factory=VendorMapping)
    salesforce: VendorMapping = Field(default_factory=VendorMapping)
    close: VendorMapping = Field(default_factory=VendorMapping)

    def ordered_stages(self) -> dict[str, list[StageMapping]]:
        """Per salespulse pipeline, the mapped stages that carry an ``order``, in that order (ties by name).

        HubSpot's built-in stages count only when mapped: their order is the portal's, not a guess.
        """
        out: dict[str, dict[str, StageMapping]] = {}
        for mapping in (self.hubspot, self.pipedrive, self.salesforce, self.close):
            for stage in mapping.stages.values():
                if stage.order is not None:
                    out.setdefault(stage.pipeline, {}).setdefault(stage.stage, stage)
        return {
            pipeline: sorted(stages.values(), key=lambda s: (s.order or 0, s.stage))
            for pipeline, stages in out.items()
        }
