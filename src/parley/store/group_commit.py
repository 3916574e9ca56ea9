"""Group commit: the batches of concurrent callers stored together, by one of them.

A store pays fixed costs for each write it makes: DuckDB a transaction's look-ups, state
merges and commit; ClickHouse a statement for each look-up and an insert (a new part) for
each table. Callers that wait for the writer hand it their batches, and the one that
takes the writer next stores every batch waiting, so those costs are paid once for all of
them. (PostgreSQL's ``commit_delay`` likewise waits only when other transactions are active.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from parley.ingest.events import Event
from parley.store.port import StoreOutcome, StoreUnavailable

Key = tuple[str, str]  # (org, event id)
# Stores distinct events, the writer held, given how many callers' batches they come from:
# (the keys newly stored, the reason for each key the engine refused or could not write).
# It raises for a failure of the whole write, after which sending the same events again
# stores each once (DuckDB's transactions rolled back; ClickHouse's batch withdrawn, or left
# cut short for a resend to finish).
StoreEvents = Callable[[list[Event], int], tuple[set[Key], dict[Key, str]]]


@dataclass(eq=False, slots=True)
class _Ticket:
    """One caller's batch, waiting to be stored by whichever caller holds the writer."""

    events: Sequence[Event]
    outcome: StoreOutcome | None = None
    error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self.outcome is not None or self.error is not None


class GroupCommit:
    """Stores the batches of concurrent callers together.

    ``writer`` is held while a group is gathered and stored (the store's write lock, which
    its other writes take too); ``store_events`` stores a group's events. Each caller returns
    only once the write holding its events has ended.
    """

    # The most a group waits for the callers expected back (see ``_await_callers``).
    wait_s = 0.100

    def __init__(self, writer: AbstractContextManager[object], store_events: StoreEvents) -> None:
        self._writer = writer
        self._store_events = store_events
        # Guards ``pending``, ``_storing`` and ``_expected``; notified as each batch comes and
        # as each group ends.
        self._arrived = threading.Condition()
        self.pending: list[_Ticket] = []
        self._storing = False  # a caller is storing the waiting batches
        # How many batches the next group waits for: those the last one stored (their
        # callers are on their way back) and those that came while it ran.
        self._expected = 1

    def ingest(self, events: Sequence[Event]) -> StoreOutcome:
        """Store ``events`` with the batches of the callers waiting beside this one."""
        ticket = _Ticket(events)
        with self._arrived:
            self.pending.append(ticket)
            self._arrived.notify_all()
            # While another caller stores, wait: it may take this batch too. (Not on the
            # writer: the next caller to store holds it while it waits for this one.)
            while self._storing and not ticket.settled:
                self._arrived.wait()
            store_them = not ticket.settled
            self._storing |= store_them
        if store_them:
            self._store_pending()
        if isinstance(ticket.error, StoreUnavailable):
            raise StoreUnavailable(str(ticket.error)) from ticket.error
        if ticket.error is not None:
            raise RuntimeError("the write that held these events failed") from ticket.error
        assert ticket.outcome is not None
        return ticket.outcome

    def _store_pending(self) -> None:
        """Store the waiting batches together, once the callers expected back have come;
        the caller has set ``_storing``."""
        group: list[_Ticket] = []
        try:
            with self._writer:
                self._await_callers()
                with self._arrived:
                    group, self.pending = self.pending, []
                try:
                    self.store_group(group)
                except BaseException as exc:  # an interruption: settle every ticket, none waits for ever
                    for ticket in group:
                        if not ticket.settled:
                            ticket.error = exc
                    raise
        finally:
            with self._arrived:
                self._storing = False
                self._expected = len(group) + len(self.pending)
                self._arrived.notify_all()

    def _await_callers(self) -> None:
        """Wait, holding the writer, until as many batches wait as the last group expects
        (``_expected``), at most ``wait_s``.

        Callers that were answered come back with their next batches, and the group that
        takes them together pays its fixed costs once. The bench's 4 clients of 1,000
        events each came back 40 to 60 ms after their answer. Before, a DuckDB transaction
        waited only after one of several batches, and only until none had come for 10 ms:
        a batch that came while a transaction ran was then stored alone, the rest together
        (transactions of 1,000 and 3,000 events in turn, or 2,000 and 2,000), and a full
        group still waited 10 ms after its last batch. A lone caller never waits: its last
        group expects one batch, its own. A caller that does not come back costs the others
        one wait; the group after expects one fewer.
        """
        deadline = time.monotonic() + self.wait_s
        with self._arrived:
            while len(self.pending) < self._expected and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)

    def store_group(self, group: list[_Ticket]) -> None:
        """Store the tickets' events together and settle each ticket; an id stored once is
        new for its first ticket only.

        If the write fails as a whole for a cause other than the store being out of reach,
        each batch is stored again alone, so that one caller's batch that the engine
        refuses fails that caller only.
        """
        try:
            stored, failed = self._store_distinct([event for ticket in group for event in ticket.events], len(group))
        except Exception as exc:
            if len(group) == 1 or isinstance(exc, StoreUnavailable):
                for ticket in group:
                    ticket.error = exc
                return
            for ticket in group:
                self.store_group([ticket])
            return
        claimed: set[Key] = set()
        for ticket in group:
            outcome = StoreOutcome([], [], {})
            for event in ticket.events:
                key = (event.org, event.id)
                if key in failed:
                    outcome.failed[event.id] = failed[key]
                elif key in stored and key not in claimed:
                    claimed.add(key)
                    outcome.stored.append(event.id)
                else:
                    outcome.duplicates.append(event.id)
            ticket.outcome = outcome

    def _store_distinct(self, events: list[Event], batches: int) -> tuple[set[Key], dict[Key, str]]:
        """``store_events`` of each id's first copy in ``events``, of ``batches`` callers."""
        unique: dict[Key, Event] = {}
        for event in events:
            unique.setdefault((event.org, event.id), event)
        if not unique:
            return set(), {}
        return self._store_events(list(unique.values()), batches)
