"""What the server's and the agent's metrics share: the ``/metrics`` listener, per-RPC metrics
around a grpclib service, and gauges read at scrape time.

Each runtime keeps its metrics in its own registry (``plastron.server.metrics``,
``plastron.agent.metrics``), so a scrape shows that process's metrics only. Names follow
Prometheus conventions: ``plastron_<server|agent>_…``, counters end in ``_total``, durations are
histograms in ``_seconds``. ``docs/operations.md`` lists every metric.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from plastron.configs.telemetry import PrometheusConfig, TelemetryConfig
from plastron.errors import ConfigError
from plastron.logs import fields

# Latency buckets from 1 ms (a cached Workload API answer) to 30 s (an HSM under load).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# No ``_created`` series: a timestamp per label set doubles each scrape for nothing Prometheus
# needs (process_start_time_seconds says when counters began).
disable_created_metrics()  # type: ignore[no-untyped-call]

HandlerFn = Callable[[Any], Awaitable[None]]
Samples = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class CallbackGauge(Collector):
    """A labelled gauge whose samples a function gives at scrape time (in the scrape thread:
    the function only reads)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], samples: Samples) -> None:
        self._name, self._doc, self._labels = name, doc, labels
        self.samples = samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=list(self._labels))
        for values, value in self.samples():
            family.add_metric(list(values), value)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._doc, labels=list(self._labels))


@dataclass(frozen=True)
class RpcMetrics:
    """Calls and their latency by method and gRPC code; streams open and the time to their
    first response, by method."""

    calls: Counter
    duration: Histogram
    open_streams: Gauge
    first_response: Histogram

    @classmethod
    def create(cls, prefix: str, what: str, registry: CollectorRegistry) -> RpcMetrics:
        labels = ("method", "code")
        return cls(
            calls=Counter(
                f"{prefix}_rpc_calls", f"{what} calls ended, by method and gRPC status code",
                labels, registry=registry,
            ),
            duration=Histogram(
                f"{prefix}_rpc_duration_seconds",
                f"{what} call duration (streams: until they end), by method and code",
                labels, buckets=LATENCY_BUCKETS, registry=registry,
            ),
            open_streams=Gauge(
                f"{prefix}_rpc_open_streams", f"{what} streaming calls open now, by method",
                ("method",), registry=registry,
            ),
            first_response=Histogram(
                f"{prefix}_rpc_first_response_seconds",
                f"{what} time from a call's start to its first response message, by method",
                ("method",), buckets=LATENCY_BUCKETS, registry=registry,
            ),
        )  # fmt: skip

    def instrument(self, service: Any) -> InstrumentedService:
        """``service`` (anything with a grpclib ``__mapping__``) with every call measured."""
        mapping: dict[str, Handler] = {}
        for path, handler in service.__mapping__().items():
            method = path.rsplit("/", 1)[-1]
            streaming = handler.cardinality in (Cardinality.UNARY_STREAM, Cardinality.STREAM_STREAM)
            mapping[path] = Handler(
                self._measured(handler.func, method, streaming),
                handler.cardinality,
                handler.request_type,
                handler.reply_type,
            )
        return InstrumentedService(mapping)

    def _measured(self, func: HandlerFn, method: str, streaming: bool) -> HandlerFn:
        series = _MethodSeries(self, method)

        async def measured(stream: Any) -> None:
            started = time.perf_counter()
            code = Status.OK
            timed = _FirstResponseTimer(stream, started, series.first_response())
            if streaming:
                series.open_streams().inc()
            try:
                await func(timed)
            except GRPCError as exc:
                code = exc.status
                raise
            except asyncio.CancelledError:
                code = Status.CANCELLED
                raise
            except Exception:
                code = Status.UNKNOWN
                raise
            finally:
                if streaming:
                    series.open_streams().dec()
                calls, duration = series.ended(code)
                calls.inc()
                duration.observe(time.perf_counter() - started)

        return measured


class _MethodSeries:
    """One method's series, each bound (``labels()``) on its first use and kept: ``labels()``
    takes the metric's lock and builds its key on every call, three to five times per RPC.
    Bound on first use, not up front, so /metrics shows the same series as before (a method
    never called has none)."""

    def __init__(self, metrics: RpcMetrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._first_response: Any = None
        self._open_streams: Any = None
        self._ended: dict[Status, tuple[Any, Any]] = {}

    def first_response(self) -> Any:
        if self._first_response is None:
            self._first_response = self._metrics.first_response.labels(self._method)
        return self._first_response

    def open_streams(self) -> Any:
        if self._open_streams is None:
            self._open_streams = self._metrics.open_streams.labels(self._method)
        return self._open_streams

    def ended(self, code: Status) -> tuple[Any, Any]:
        """The calls counter and duration histogram of calls that ended with ``code``."""
        pair = self._ended.get(code)
        if pair is None:
            m = self._metrics
            pair = (
                m.calls.labels(self._method, code.name),
                m.duration.labels(self._method, code.name),
            )
            self._ended[code] = pair
        return pair


class _FirstResponseTimer:
    """The handler's stream, timing its first ``send_message``."""

    def __init__(self, stream: Any, started: float, histogram: Any) -> None:
        self._stream = stream
        self._started = started
        self._histogram: Any = histogram

    async def send_message(self, message: Any, **kwargs: Any) -> None:
        if self._histogram is not None:
            self._histogram.observe(time.perf_counter() - self._started)
            self._histogram = None
        await self._stream.send_message(message, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class InstrumentedService:
    """A grpclib service made of an already-built mapping."""

    def __init__(self, mapping: dict[str, Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping


class MetricsListener:
    """``telemetry { Prometheus { host port } }``: ``/metrics`` over HTTP on its own thread."""

    def __init__(self, config: PrometheusConfig, registry: CollectorRegistry) -> None:
        self._config = config
        self._registry = registry
        self._server: Any = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        try:
            self._server, _ = start_http_server(
                self._config.port, self._config.host, registry=self._registry
            )
        except OSError as exc:
            where = f"{self._config.host}:{self._config.port}"
            raise ConfigError(
                f"telemetry.Prometheus: cannot listen on {where}: {exc.strerror}"
            ) from exc

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Telemetry:
    """A process's ``telemetry { Prometheus {} }``: its ``/metrics`` listener once started."""

    def __init__(self, config: TelemetryConfig) -> None:
        self._config = config
        self.listener: MetricsListener | None = None

    def _listen(self, prometheus: PrometheusConfig, registry: CollectorRegistry) -> None:
        self.listener = MetricsListener(prometheus, registry)
        self.listener.start()
        # Logged under the subclass's module: the agent's or the server's logger, as before.
        logging.getLogger(type(self).__module__).info(
            "metrics listening", extra=fields(address=f"{prometheus.host}:{self.listener.port}")
        )

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
