"""``SalespulseApp``: Faust tuned for salespulse's batch-at-a-time agent.

- Batch agents (``SalespulseApp.batch_agent``): a topic's records reach their agent a fetch at a
  time, below Faust's per-message stream, and state is persisted once per offset commit
  (``batch_consumer.BatchConsumer``).
- A short consumer fetch wait: Faust hard-codes ``fetch_max_wait_ms=1500``, and under steady traffic
  some brokers (Tansu among them) hold a fetch that long, putting ~1 s of lag on every event.
- No ``Monitor`` sensor: it records per-event statistics for Faust's web views, which salespulse
  does not serve (it exports its own metrics); dropping it makes the per-message path 10-20 % cheaper.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from salespulse.engine.faust.batch_consumer import BatchAgent, BatchConsumer


class ShortFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, creating its aiokafka consumer with the app's fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher at start().
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class ShortFetchConsumer(BatchConsumer):
    def _new_consumer_thread(self) -> ShortFetchConsumerThread:
        return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ShortFetchTransport(faust_aiokafka.Transport):
    Consumer = ShortFetchConsumer


class SalespulseApp(faust.App):
    """A ``faust.App`` whose consumer waits at most ``fetch_max_wait_ms`` for a fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        #: topic name -> the batch agent consuming it (see ``batch_agent``)
        self.batch_agents: dict[str, BatchAgent] = {}
        super().__init__(*args, **kwargs)

    def batch_agent(self, topic: faust.TopicT, agent: BatchAgent) -> None:
        """Consume ``topic`` in this app's group with ``agent``: ``handle`` gets each fetch's records of it.

        The records of one call are in offset order per partition. Their offsets are committed only after
        the next ``agent.persist()``, which must write everything ``handle`` did with them until then.
        """
        for name in topic.topics:
            self.batch_agents[name] = agent
        self.topics.add(topic)  # subscribed: the group assigns its partitions, tables are co-partitioned

    def _new_transport(self) -> ShortFetchTransport:
        return ShortFetchTransport(self.conf.broker_consumer, self, loop=self.loop)

    def on_init_dependencies(self) -> Any:
        dependencies = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return dependencies
