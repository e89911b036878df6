from salespulse.families.spec import FamilySpec, Field
from salespulse.outputs.records import RecordSpec

SPEC = FamilySpec(
    name="meetings", redis_prefix="salespulse:meetings", scopes=("rep", "team"), all_time_scopes=(),
    rolling={"7d": 168}, fields=(Field("held", "meetings held"),),
    record=RecordSpec(model_name="MeetingsPartial", doc="One partition's meetings held ..."),
)
