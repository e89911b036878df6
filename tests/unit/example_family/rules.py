from salespulse.models.events import MeetingHeld


def meeting_of(event: object) -> tuple[str, str] | None:
    """(rep, team) of a held meeting, else None."""
    if isinstance(event, MeetingHeld):
        return event.rep_id or "unassigned", event.team or "unassigned"
    return None
