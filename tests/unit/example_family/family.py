from typing import Any

from salespulse.families.windowed import WindowedFamily
from tests.unit.example_family.rules import meeting_of
from tests.unit.example_family.spec import SPEC


class MeetingsFamily(WindowedFamily):
    spec = SPEC

    def apply(self, partition: int, offset: int, event: Any, now: float, arrived: float | None = None) -> bool:
        found = meeting_of(event)
        if found is None:
            return False
        rep, team = found
        one = {"held": 1}
        self.add(partition, offset, event.occurred_at.timestamp(), now, [("rep", rep, one), ("team", team, one)])
        return True
