"""`trueup run`: the always-on daemon. It is the only owner of time.

Jobs (APScheduler, each never overlapping itself, on a thread pool so a slow solve never
blocks telemetry):

* **read** (every minute): one gateway read → metrics → the store (raw reading, then the
  intervals it completes: counters → kWh, idempotent) → events (grid outage, SOC far off
  the plan) that ask for an early re-plan → the kill switch, if requested.
* **plan** (every 15 minutes, or early on an event): history from the store → plan →
  settings → the one in force now through the safety rails → the write recorded.
* **rollup** (every 15 minutes): billing state from the stored intervals → metrics/store.

Signals: SIGTERM/SIGINT stop after the job in flight (a write finishes; the store is
flushed and closed); SIGHUP reloads the configuration; SIGUSR1 trips the kill switch.
With no configuration: the example site on the simulated gateway, dry run.
Times are UTC epoch seconds from the injected clock; energies kWh; SOC app %.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adapters.gateway.base import Clock, Gateway, SiteState, SystemClock
from adapters.gateway.dryrun import DryRunGateway
from adapters.gateway.safety import SafeGateway, install_kill_signal
from adapters.telemetry import readings_to_intervals
from optimizer.behaviour import Settings
from optimizer.billing import billing_state
from optimizer.errors import InputError
from optimizer.tariff import load_tariff
from trueup.config import TrueupConfig, load_config
from trueup.metrics import HttpEndpoint, Metrics
from trueup.planning import PlanMemo, PlanResult, make_plan

log = logging.getLogger("trueup.daemon")

TELEMETRY_INTERVAL_S = 300
BRIDGE_GAP_S = 14 * 86400  # counters bridge a restart gap up to two weeks
SOC_OFF_PLAN_PERCENT = 10.0
MIN_REPLAN_S = 300.0  # events never re-plan more often than this
SOC_EVENT_MIN_AGE_S = 1800.0
CLOCK_JUMP_S = 60.0  # the wall clock moving this far against the monotonic one is a jump


@dataclass
class Schedule:
    """How often the jobs run (seconds)."""

    read_s: float = 60.0
    forecast_s: float = 1800.0
    plan_s: float = 900.0
    rollup_s: float = 900.0
    # health: telemetry / plans older than this are stale
    stale_read_s: float = 300.0
    stale_plan_s: float = 2700.0


@dataclass
class DaemonState:
    last_state: SiteState | None = None
    last_read_at: float | None = None
    last_plan: PlanResult | None = None
    last_plan_at: float | None = None
    plans_made: int = 0
    solar: object | None = None  # the latest forecasts.solar.SolarForecast
    replan_reason: str | None = None
    events: list[str] = field(default_factory=list)
    last_soc: tuple[float | None, float] = (None, 0.0)  # (app %, when read)
    last_settings: Settings | None = None  # the settings last read whole
    waiting_said: bool = False
    savings: object | None = None  # optimizer.savings.MonthSavings of the month so far


class Daemon:
    """The jobs and their shared state; :func:`run` schedules them in real time, tests
    call them directly with a simulated clock."""

    def __init__(self, cfg: TrueupConfig, *, dry_run: bool, clock: Clock | None = None,
                 gateway: Gateway | None = None, store=None, data_dir: str | Path | None = None,
                 schedule: Schedule | None = None) -> None:
        from adapters.store import default_data_dir, open_store
        from trueup.gateways import build_gateway

        self.cfg = cfg
        self.dry_run = dry_run
        self.clock = clock or SystemClock()
        self.schedule = schedule or Schedule()
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.store = store if store is not None else open_store(self.data_dir, clock=self.clock)
        raw = gateway if gateway is not None else build_gateway(cfg, self.clock, self.data_dir)
        inner = DryRunGateway(raw, self.clock) if dry_run else raw
        self.metrics = Metrics()
        self.gateway = SafeGateway(inner, cfg.rails(), self.clock,
                                   owner_file=self.data_dir / "owner-settings.json",
                                   on_result=self._record_write)
        self.metrics.dry_run.set(1.0 if dry_run else 0.0)
        self.state = DaemonState()
        self.forecaster = None
        remote = [p for p in cfg.forecast.solar.providers if p != "clear_sky"]
        if remote:
            from forecasts.solar import build_forecaster

            self.forecaster = build_forecaster(cfg.forecast.solar,
                                               cache=self.store.forecast_cache,
                                               clock=self.clock.now)
        self._lock = threading.Lock()  # guards self.state between the job threads
        self.memo = PlanMemo()  # what the planner keeps between plans
        self._anchor_t: float | None = None  # reading before the oldest unfinished interval
        # after the clock went back: readings are not stored until it passes this time
        # again (their times are taken by the readings made before the jump)
        self._hold_until: float | None = None
        self.mqtt = None  # Home Assistant over MQTT ([mqtt] enabled), started in start()
        if cfg.mqtt.enabled:
            from trueup.mqtt import MqttBridge

            self.mqtt = MqttBridge(cfg.mqtt, on_kill=self.gateway.request_kill,
                                   kill_state=self._kill_on,
                                   errors=self.metrics.mqtt_errors_total,
                                   connected=self.metrics.mqtt_connected)
            self.metrics.mqtt_connected.set(0.0)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Learn the owner's settings; resume telemetry from the last stored reading so a
        restart's gap is bridged by the counters, not lost."""
        now = self.clock.now()
        self._hold_after_jump_back(now)
        self.gateway.remember_writes([  # the budget spans restarts
            (w.at, w.result.api_calls if w.result.api_calls is not None
             else len(w.result.written), bool(w.result.written))
            for w in self.store.writes(now - 86400, now + 1)])
        self.gateway.start()
        # the counters bridge from the last reading that has them (the very last one may
        # have been a timeout)
        before = [r for r in self.store.readings(now - BRIDGE_GAP_S, now)
                  if r.grid_import_wh is not None and r.grid_export_wh is not None]
        if before and self._hold_until is None:
            self._anchor_t = before[-1].timestamp
            log.info("resuming after a stop: last reading %.0f s ago", now - self._anchor_t)
        if self.mqtt is not None:
            self.mqtt.start()  # returns at once; a broker that is down is retried
            self.publish_state()

    def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
        self.store.close()

    def _kill_on(self) -> bool:
        """The kill switch is on: requested (a signal, the config, MQTT) or carried out."""
        return self.gateway.kill_requested or self.gateway.killed

    def publish_state(self) -> None:
        """The state Home Assistant shows (trueup/mqtt.py), after each read and plan; a
        value not known is None (shown "unknown", never 0). Never blocks, never fails the
        job that calls it."""
        if self.mqtt is None:
            return
        try:
            self._publish_state()
        except Exception as e:  # Home Assistant's view must never stop a read or a plan
            self.metrics.mqtt_errors_total.inc()
            log.warning("MQTT: the state was not published: %s", e)

    def _publish_state(self) -> None:
        from datetime import UTC, datetime

        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()

        now = self.clock.now()
        with self._lock:
            state, plan, plan_at = (self.state.last_state, self.state.last_plan,
                                    self.state.last_plan_at)
        s = state.settings if state is not None else None
        values: dict[str, object] = {
            "soc": None if state is None else _round(state.soc_percent, 1),
            "reserve": None if s is None else _round(s.reserve_percent, 1),
            "mode": None if s is None or s.mode is None else str(s.mode),
            "last_plan": iso(plan_at), "kill_switch": self._kill_on(),
            "dry_run": self.dry_run,
            "savings_month": (None if self.state.savings is None
                              else _round(self.state.savings.vs_no_battery, 2)),
            **dict.fromkeys(("next_change", "next_change_reason", "export_cap_used",
                             "export_cap_budget", "true_up_p10", "true_up_p50",
                             "true_up_p90")),
        }
        if plan is not None:
            nxt = None
            if plan.schedule is not None:
                nxt = next((e for e in plan.schedule.entries if e.start_utc > now), None)
            values["next_change"] = None if nxt is None else iso(nxt.start_utc)
            values["next_change_reason"] = None if nxt is None else (
                f"{nxt.settings.mode} reserve {nxt.settings.reserve_percent:g}%"
                f"{', grid charging' if nxt.settings.grid_charging else ''}: {nxt.reason}"
            )[:255]
            o = plan.outlook
            values["export_cap_used"] = None if o is None else round(o.used_kwh, 2)
            values["export_cap_budget"] = None if o is None else round(o.cap_kwh, 2)
            proj = plan.true_up_projection()
            for q, key in ((0.1, "true_up_p10"), (0.5, "true_up_p50"), (0.9, "true_up_p90")):
                values[key] = None if proj is None else _round(proj.quantile(q), 2)
        self.mqtt.publish_state(values)

    # -- jobs --------------------------------------------------------------------------

    def clock_jumped(self, seconds: float) -> None:
        """The wall clock moved ``seconds`` (negative: back) against elapsed time: NTP
        correcting a clock at boot, or a hand-set date. The plan and the health ages are
        measured from now on the new clock (re-plan at once); after a jump back the
        interval accounting restarts at the next reading (the readings taken under the old
        clock stay stored as they were)."""
        log.warning("the system clock jumped %s by %s: planning again now on the new clock",
                    "back" if seconds < 0 else "forward", _duration(abs(seconds)))
        with self._lock:
            self.state.last_plan_at = None
            self.state.last_read_at = None
        self.gateway.clock_jumped(seconds)
        if seconds < 0:
            self._hold_after_jump_back(self.clock.now())

    def _hold_after_jump_back(self, now: float) -> None:
        """Readings stored with times after ``now`` (the clock went back, running or
        stopped): hold the interval accounting at the newest of them until the clock
        passes it again; then the lifetime counters bridge from it. Nothing stored is
        rewritten or mixed with readings of the same times."""
        later = [r for r in self.store.readings(now + 1, now + BRIDGE_GAP_S)
                 if r.grid_import_wh is not None and r.grid_export_wh is not None]
        if later:
            self._hold_until = self._anchor_t = later[-1].timestamp
            log.warning("readings are stored up to %s ahead of the clock: new readings are "
                        "not stored until it gets there again; the lifetime counters bridge "
                        "the time", _duration(self._hold_until - now))

    def read_job(self) -> SiteState:
        """One read: metrics, store, intervals, events."""
        self.gateway.service_kill()
        state = self.gateway.read()
        now = self.clock.now()
        with self._lock:
            last = self.state.last_read_at
        if last is not None and now < last - CLOCK_JUMP_S:  # a jump back between two reads
            self.clock_jumped(now - last)
        self.metrics.observe_state(state)
        for name in state.unknown:
            if name in ("soc_percent", "grid_w"):
                self.metrics.gateway_errors_total.labels(op="read").inc()
                break
        if self._hold_until is not None and now > self._hold_until:
            self._hold_until = None
        if self._hold_until is None:
            self.store.add_readings([state])
            self._store_intervals(now)
        with self._lock:
            previous = self.state.last_state
            self.state.last_state = state
            self.state.last_read_at = now
            self._events(previous, state)
        self.publish_state()
        return state

    def _store_intervals(self, now: float) -> None:
        """Intervals from the readings since the anchor (idempotent: the store keeps the
        best version of each interval, so recomputing the one in progress is harmless)."""
        since = self._anchor_t if self._anchor_t is not None else now - 2 * TELEMETRY_INTERVAL_S
        readings = self.store.readings(since, now + 1)
        if len(readings) < 2:
            if readings and self._anchor_t is None:
                self._anchor_t = readings[0].timestamp
            return
        tel = readings_to_intervals(
            readings, TELEMETRY_INTERVAL_S, max_gap_s=BRIDGE_GAP_S,
            topology=self.cfg.site.metering_topology,
            max_power_kw=self.cfg.optimizer.service_limit_kw + self.cfg.battery.max_charge_kw,
            source="gateway telemetry")
        if len(tel.data):
            self.store.add_telemetry(tel)
        # the next window starts at the last reading with counters before the last
        # finished boundary: readings during an outage carry none, and the counters must
        # bridge the outage from the last good one
        boundary = now - now % TELEMETRY_INTERVAL_S
        older = [r.timestamp for r in readings
                 if r.timestamp <= boundary and r.grid_import_wh is not None
                 and r.grid_export_wh is not None]
        if older:
            self._anchor_t = older[-1]

    def _events(self, previous: SiteState | None, state: SiteState) -> None:
        if state.settings.complete() is not None:
            self.state.last_settings = state.settings.complete()
        if state.soc_percent is not None:
            self.state.last_soc = (state.soc_percent, state.timestamp)
        if state.grid_status == "down" and (previous is None or previous.grid_status != "down"):
            self._ask_replan("grid outage")
        if (state.grid_status == "up" and previous is not None
                and previous.grid_status == "down"):
            self._ask_replan("the grid is back")
        plan = self.state.last_plan
        # in a dry run nothing carries the plan out, so the SOC is expected to drift from it;
        # a fresh plan gets half an hour before its SOC is held against it
        if (self.dry_run or plan is None or not plan.plan.ok or state.soc_percent is None
                or self.state.last_plan_at is None
                or self.clock.now() - self.state.last_plan_at < SOC_EVENT_MIN_AGE_S):
            return
        x = plan.inputs
        step_s = x.step_hours * 3600
        pos = (self.clock.now() - x.prices.start_utc[0]) / step_s
        k = int(pos)
        if 0 <= k < len(plan.plan.soc_kwh):
            before = x.soc_kwh if k == 0 else plan.plan.soc_kwh[k - 1]
            planned_kwh = before + (plan.plan.soc_kwh[k] - before) * (pos - k)
            planned = 100 * planned_kwh / x.battery.usable_kwh
            if abs(planned - state.soc_percent) > SOC_OFF_PLAN_PERCENT:
                self._ask_replan(f"SOC {state.soc_percent:.0f}% is far from the plan's "
                                 f"{planned:.0f}%")

    def _ask_replan(self, reason: str) -> None:
        if self.state.replan_reason is None:
            self.state.replan_reason = reason
            self.state.events = [*self.state.events[-99:], reason]
            log.info("re-plan requested: %s", reason)

    def replan_due(self, now: float) -> bool:
        with self._lock:
            last = self.state.last_plan_at
            if last is None or now - last >= self.schedule.plan_s:
                return True
            return self.state.replan_reason is not None and now - last >= MIN_REPLAN_S

    def forecast_job(self) -> None:
        """Refresh the solar forecast through the providers' chain (each provider keeps
        its own limits; failures fall back, with the reason, down to clear sky)."""
        if self.forecaster is None:
            return
        from forecasts.solar import make_request

        now = self.clock.now()
        req = make_request(self.cfg.site, self.cfg.pv, start_utc=now,
                           hours=self.cfg.forecast.solar.hours)
        try:
            solar = self.forecaster.forecast(req)
        except Exception as e:  # never let a provider take the daemon down
            log.error("solar forecast failed, keeping the last one: %s", e)
            self.metrics.gateway_errors_total.labels(op="forecast").inc()
            return
        for skip in getattr(solar, "skipped", ()):
            log.info("solar forecast: skipped %s", skip)
        with self._lock:
            self.state.solar = solar

    def plan_job(self) -> PlanResult | None:
        """Plan from the history so far and apply the setting in force now. Waits for a
        reading with the battery's SOC (never plans from a guessed SOC); while the grid is
        down the plan neither grid-charges nor exports."""
        now = self.clock.now()
        with self._lock:
            state = self.state.last_state
            soc, soc_at = self.state.last_soc
            last_good = self.state.last_plan
            solar = self.state.solar
        if soc is None or now - soc_at > self.schedule.stale_read_s:
            if not self.state.waiting_said:
                log.info("not planning yet: waiting for a reading of the battery's SOC")
                self.state.waiting_said = True
            return None
        self.state.waiting_said = False
        with self._lock:
            reason = self.state.replan_reason
            self.state.replan_reason = None
        grid_up = None if state is None or state.grid_status is None \
            else state.grid_status != "down"
        history = self._history(now)
        t0 = time.perf_counter()
        with self._lock:
            current = self.state.last_settings
        result = make_plan(self.cfg, at_utc=int(now), soc_percent=soc, history=history,
                           solar=solar, grid_up=grid_up, memo=self.memo,
                           last_good=last_good if last_good and last_good.plan.ok else None,
                           writes_sent_ago_s=self.gateway.write_ages(),
                           current_settings=current)
        self.metrics.plan_solve_seconds.observe(time.perf_counter() - t0)
        out = result.to_json()
        if reason:
            out["trigger"] = reason
        self.store.save_plan(out, saved_at=now)
        self._record_forecasts(result, now)
        self._observe_plan(result, now, None if history is None else history.end_utc)
        if result.schedule and result.schedule.entries:
            entry = _entry_in_force(result, now)
            self.gateway.apply(entry.settings)  # recorded by _record_write
        with self._lock:
            self.state.last_plan = result
            self.state.last_plan_at = now
            self.state.plans_made += 1
        self.publish_state()
        return result

    def _record_write(self, kind: str, applied) -> None:
        """Every result of the rails (plan writes, refusals, kill-switch restores): one
        row in the store, and the write and error counters."""
        self.store.record_write(applied, self.clock.now())
        if applied.errors:
            self.metrics.gateway_errors_total.labels(op="write").inc()
        self.metrics.observe_write(applied.requested, applied.written)

    def _record_forecasts(self, result: PlanResult, now: float) -> None:
        """Keep the PV and load forecasts the plan used, to score them once metered."""
        x = result.inputs
        step = round(x.step_hours * 3600)
        src = result.forecast_sources
        for kind, values in (("pv", x.pv_kwh), ("load", x.load_kwh)):
            provider = src.get(kind, "?").split(" (")[0]
            self.store.record_forecast(provider, kind, now, x.prices.start_utc, values,
                                       meta={"step_s": step})

    def score_forecasts(self, now: float, days: float = 3.0) -> list:
        """MAE and bias of the forecasts issued in the last ``days`` against the stored
        intervals (forecasts/accuracy.py), per kind, provider and horizon; also metrics."""
        from forecasts.accuracy import ForecastLog

        recs = self.store.forecast_records(since=now - days * 86400, until=now)
        actual = self.store.intervals(int(now - days * 86400 - 86400), int(now),
                                      interval_s=TELEMETRY_INTERVAL_S)
        if not recs or not len(actual):
            return []
        log_ = ForecastLog()
        for r in recs:
            values = np.nan_to_num(r.values, nan=0.0)
            log_.record(r.provider, r.kind, int(r.issued_at), r.starts, values,
                        int(r.meta.get("step_s", 900)))
        scores = log_.score(actual)  # PV and load steps against the metered intervals
        for sc in scores:
            labels = {"kind": sc.kind, "provider": sc.provider, "horizon": sc.horizon}
            if sc.mae_kw is not None:
                self.metrics.forecast_mae_kw.labels(**labels).set(sc.mae_kw)
            if sc.bias_kw is not None:
                self.metrics.forecast_bias_kw.labels(**labels).set(sc.bias_kw)
        return scores

    def _history(self, now: float):
        """The stored intervals of the last two years (the settlement period so far, and the
        same weeks a year ago for the weeks ahead), at the coarsest interval stored (utility
        data imported at 15 minutes or an hour, telemetry summed to it)."""
        start = int(now - 2 * 366 * 86400)
        data = self.store.intervals(start, int(now))
        return data if len(data) else None

    def _observe_plan(self, result: PlanResult, now: float,
                      history_end: float | None) -> None:
        m, p = self.metrics, result.plan
        if np.isfinite(p.objective):
            m.plan_objective_dollars.set(p.objective)
        m.last_plan_timestamp_seconds.set(now)
        if result.outlook is not None:
            m.export_cap_kwh.set(result.outlook.cap_kwh)
            m.export_cap_used_kwh.set(result.outlook.used_kwh)
        m.observe_projection(result.true_up_projection())
        fit = result.schedule.budget if result.schedule is not None else None
        m.write_budget_value_lost_dollars.set(None if fit is None else fit.value_lost)
        m.write_budget_left.set(None if fit is None else float(fit.left_today))
        solar = self.state.solar
        age = (now - solar.fetched_at) if solar is not None else 0.0  # offline: computed now
        m.forecast_age_seconds.labels(kind="pv").set(max(0.0, age))
        # the load forecast is the stored history's profile: as old as its newest interval
        # (no history: the seasonal profile, no age, no series)
        if history_end is None:
            with contextlib.suppress(KeyError):
                m.forecast_age_seconds.remove("load")
        else:
            m.forecast_age_seconds.labels(kind="load").set(max(0.0, now - history_end))

    def rollup_job(self) -> None:
        """The billing state of the stored intervals, for metrics and the store."""
        now = self.clock.now()
        data = self._history(now)
        if data is None:
            return
        tariff = load_tariff(self.cfg.tariff)
        st = billing_state(tariff, data, true_up_month=self.cfg.optimizer.true_up_month,
                           export_cap_kwh=self.cfg.optimizer.export_cap_kwh)
        self.store.save_billing_state(st, computed_at=now)
        savings = self._month_savings(tariff, data, st.month)
        with self._lock:
            self.state.savings = savings
        self.score_forecasts(now)
        if st.export_cap_kwh is not None:
            self.metrics.export_cap_kwh.set(st.export_cap_kwh)
        self.metrics.export_cap_used_kwh.set(st.export_cap_used_kwh)

    def _month_savings(self, tariff, data, month: str):
        """The billing month so far billed as metered, without the battery and as
        Self-Powered (optimizer/savings.py), from the SOC read at its start (else half);
        None without load and PV in the store."""
        from optimizer.policy import battery_spec
        from optimizer.savings import month_savings
        from trueup.planning import _month_bounds_utc

        y, m = int(month[:4]), int(month[5:])
        a, _ = _month_bounds_utc(y * 12 + m - 1, tariff.tz,
                                 tariff.spec.calendar.meter_read_day)
        b = self.cfg.battery
        first = self.store.readings(a, a + 6 * 3600)
        soc = next((r.soc_percent for r in first if r.soc_percent is not None), 50.0)
        return month_savings(tariff, data.select(data.start_utc >= a), battery_spec(b),
                             b.backup_floor_percent, b.usable_kwh * soc / 100.0,
                             export_cap_kwh=self.cfg.optimizer.export_cap_kwh)

    # -- health and /plan --------------------------------------------------------------

    def health(self) -> tuple[bool, dict]:
        now = self.clock.now()
        with self._lock:
            read_age = None if self.state.last_read_at is None else now - self.state.last_read_at
            plan_age = None if self.state.last_plan_at is None else now - self.state.last_plan_at
        # a negative age is a clock that went back: not healthy until the jobs catch up
        ok = (read_age is not None and -CLOCK_JUMP_S <= read_age <= self.schedule.stale_read_s
              and plan_age is not None
              and -CLOCK_JUMP_S <= plan_age <= self.schedule.stale_plan_s)
        return ok, {"ok": ok, "telemetry_age_s": read_age, "plan_age_s": plan_age,
                    "dry_run": self.dry_run, "kill_switch": self.gateway.killed}

    def current_plan(self) -> dict | None:
        with self._lock:
            plan = self.state.last_plan
        return plan.to_json() if plan is not None else None

    # -- the web page (trueup/webpage.py) ----------------------------------------------

    def page_state(self):
        """What the web page at ``/`` shows, as of now."""
        from trueup.webpage import PageState

        now = self.clock.now()
        with self._lock:
            st = self.state
            state, read_at, plan, plan_at = (st.last_state, st.last_read_at, st.last_plan,
                                             st.last_plan_at)
        g = self.gateway
        return PageState(
            now=now, tz=self.cfg.site.timezone, state=state, read_at=read_at, plan=plan,
            plan_at=plan_at, stale_read_s=self.schedule.stale_read_s,
            stale_plan_s=self.schedule.stale_plan_s, billing=self.store.billing_state(),
            writes=self.store.writes(now - 7 * 86400, now + 1)[-10:],
            rails_log=tuple(g.log[-5:]), kill_switch=g.killed, kill_requested=g.kill_requested,
            kill_confirmed=g.kill_confirmed, dry_run=self.dry_run, savings=self.state.savings,
            control=bool(self.cfg.http.control_token_file))

    def web_page(self) -> str:
        from trueup.webpage import render

        return render(self.page_state())

    def control_token_file(self) -> str:
        return self.cfg.http.control_token_file  # a reload applies it at once

    def web_kill(self, reason: str) -> str:
        """The kill switch from the web page: the same path as SIGUSR1 (the rails' request,
        carried out by :meth:`SafeGateway.service_kill`, here at once rather than by the
        main loop's next turn, which would otherwise do it within a second)."""
        self.gateway.request_kill(reason)
        self.gateway.service_kill()
        g = self.gateway
        state = ("the owner's settings are restored" if g.kill_confirmed else
                 "restoring the owner's settings has not succeeded yet; the rails retry")
        return f"kill switch on: {state}; trueup writes nothing more until a restart"

    def reload(self, path: str | None) -> None:
        """SIGHUP: read the configuration again. The gateway connection keeps running; the
        safety rails take the new limits, and a kill switch set in the file trips at once
        (only a restart clears it)."""
        try:
            cfg = load_config(path)
        except Exception as e:  # keep running on the old config, loudly
            log.error("reload failed, keeping the running configuration: %s", e)
            return
        later = [name for name, old, new in (
            ("[http] bind", self.cfg.http.bind, cfg.http.bind),
            ("[gateway]", self.cfg.gateway, cfg.gateway),
            ("[mqtt]", self.cfg.mqtt, cfg.mqtt)) if old != new]
        if later:
            log.warning("%s changed: applied at the next restart (systemctl restart trueup); "
                        "the rest of the configuration is applied now", " and ".join(later))
        self.cfg = cfg
        self.gateway.update_rails(cfg.rails())
        log.info("configuration reloaded from %s%s", cfg.source,
                 " (kill switch on: writes are off)" if self.gateway.killed else "")


def _entry_in_force(result: PlanResult, now: float):
    entries = result.schedule.entries
    current = entries[0]
    for e in entries:
        if e.start_utc <= now:
            current = e
    return current


def simulate(daemon: Daemon, clock, until: float, *, on_step=None) -> None:
    """Run the jobs on a simulated clock (``clock.advance``) until ``until``: the same jobs
    as :func:`run`, at the same cadence, as fast as the machine goes."""
    s = daemon.schedule
    next_rollup = next_forecast = clock.now()
    while clock.now() < until:
        clock.advance(s.read_s)
        daemon.read_job()
        now = clock.now()
        if now >= next_forecast:
            daemon.forecast_job()
            next_forecast = now + s.forecast_s
        if daemon.replan_due(now):
            daemon.plan_job()
        if now >= next_rollup:
            daemon.rollup_job()
            next_rollup = now + s.rollup_s
        if on_step is not None:
            on_step(daemon)


def run(config: str | None, *, dry_run: bool, data_dir: str | None = None) -> int:
    """Run until SIGTERM: the scheduler, the HTTP endpoint, the signal handlers."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    cfg = load_config(config)
    if config is None:
        dry_run = True  # the built-in example site never writes
    _check_port_free(cfg)  # before the store or the gateway is touched
    sim_clock = _simulated_clock(cfg, data_dir)
    rate = sim_clock.speed if sim_clock is not None else 1.0  # simulated s per real s
    daemon = Daemon(cfg, dry_run=dry_run, data_dir=data_dir, clock=sim_clock)
    daemon.start()
    http = HttpEndpoint(cfg.http.bind, daemon.metrics, daemon.health, daemon.current_plan,
                        allowed_hosts=tuple(cfg.http.allowed_hosts), page=daemon.web_page,
                        control=daemon.web_kill,
                        token_file=daemon.control_token_file).start()
    if cfg.http.bind.rpartition(":")[0] in ("0.0.0.0", "::", "[::]", ""):
        log.warning("the HTTP endpoint listens on every interface (%s): anyone on your "
                    "network can read your plan and metrics; bind 127.0.0.1 unless a "
                    "firewall limits who reaches it", cfg.http.bind)
    log.info("trueup running (%s, %s): http://%s/ (the page), /metrics", cfg.source,
             "dry run" if dry_run else "writing through the safety rails", http.address)
    sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(4)},
                                job_defaults={"max_instances": 1, "coalesce": True,
                                              "misfire_grace_time": 120})
    s = daemon.schedule
    sched.add_job(guarded("read", daemon.read_job, daemon), "interval",
                  seconds=s.read_s / rate, id="read", next_run_time=_now_dt())
    sched.add_job(guarded("plan", _plan_if_due(daemon), daemon), "interval",
                  seconds=max(0.1, 30 / rate), id="plan", next_run_time=_now_dt())
    sched.add_job(guarded("rollup", daemon.rollup_job, daemon), "interval",
                  seconds=s.rollup_s / rate, id="rollup")
    sched.add_job(guarded("forecast", daemon.forecast_job, daemon), "interval",
                  seconds=s.forecast_s / rate, id="forecast", next_run_time=_now_dt())
    stop = threading.Event()
    reload_asked = threading.Event()
    # handlers only set flags; the main loop below does the work, never inside a write
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_asked.set())
    install_kill_signal(daemon.gateway)
    sched.start()
    watch = ClockWatch(daemon.clock.now, rate)
    while not stop.wait(0.5):
        if sim_clock is not None:
            sim_clock.take_jump()  # a jump the simulation asks for, seen by the watch
        if reload_asked.is_set():
            reload_asked.clear()
            daemon.reload(config)
        daemon.gateway.service_kill()  # a SIGUSR1 acts within a second, not a minute
        jump = watch.jump()
        if jump is not None:  # the scheduler's next run times are on the old clock
            daemon.clock_jumped(jump)
            for job in sched.get_jobs():
                job.modify(next_run_time=_now_dt())
    log.info("stopping: finishing the job in flight")
    sched.shutdown(wait=True)
    http.stop()
    daemon.close()
    return 0


JOB_ERROR_REPEAT_S = 600.0  # the same failure of a job is logged again after this long


def guarded(name: str, job, daemon: Daemon):
    """``job`` for the scheduler: a failure is one log line saying what to do (repeated
    every :data:`JOB_ERROR_REPEAT_S` while it lasts, its traceback at DEBUG level) and a
    count in ``trueup_job_failures_total{job}``; the next run tries again."""
    said: dict[str, float] = {}

    def run_job() -> None:
        try:
            job()
        except Exception as e:
            daemon.metrics.job_failures_total.labels(job=name).inc()
            msg = job_error_text(e, daemon.data_dir)
            now = time.monotonic()
            if now - said.get(msg, -math.inf) >= JOB_ERROR_REPEAT_S:
                said[msg] = now
                log.error("the %s job failed: %s", name, msg)
            log.debug("the %s job's traceback", name, exc_info=True)
    return run_job


def job_error_text(e: BaseException, data_dir: Path) -> str:
    """One line for a job's failure: what happened and, where we know, what to do."""
    import shutil
    import sqlite3

    text = str(e) or type(e).__name__
    full = (isinstance(e, OSError) and e.errno == errno.ENOSPC) or (
        isinstance(e, sqlite3.OperationalError) and "full" in text)
    if full:
        try:
            free = f"{shutil.disk_usage(data_dir).free / 1e6:,.0f} MB free"
        except OSError:
            free = "free space unknown"
        return (f"the disk holding {data_dir} is full ({free}): free some space there "
                "(old logs: journalctl --vacuum-size=200M); the gateway's lifetime counters "
                "keep the energy, and the time missed is bridged from them once there is space")
    if isinstance(e, sqlite3.DatabaseError):
        return (f"the store {data_dir / 'trueup.db'} failed: {text}; trueup retries at the "
                "next run")
    return f"{type(e).__name__}: {text} (trueup retries at the next run)"


def _check_port_free(cfg: TrueupConfig) -> None:
    """A clear error (exit 2) when ``[http] bind`` cannot be listened on: the port is
    taken, or the address is not this host's."""
    import socket

    host, _, port = cfg.http.bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
        try:
            s.bind((host, int(port)))
        except OSError as e:
            busy = e.errno == errno.EADDRINUSE
            raise InputError(
                f"cannot listen on {cfg.http.bind}: "
                + ("another process already uses the port" if busy else
                   (e.strerror or str(e))),
                where=f"{cfg.source}: [http] bind",
                fix=(f"stop the other process (ss -ltnp 'sport = :{port}' shows it; is trueup "
                     "already running?) or set [http] bind to a free port" if busy else
                     "bind an address of this host, e.g. 127.0.0.1:9871")) from None


class ClockWatch:
    """Detects jumps of the wall clock ``now`` (the daemon's): its change against the
    monotonic clock's × ``rate`` (simulated seconds per real second) since the last look,
    when larger than :data:`CLOCK_JUMP_S` (seconds; None otherwise)."""

    def __init__(self, now=time.time, rate: float = 1.0) -> None:
        self._now, self._rate = now, rate
        self._wall, self._mono = now(), time.monotonic()

    def jump(self) -> float | None:
        wall, mono = self._now(), time.monotonic()
        drift = (wall - self._wall) - (mono - self._mono) * self._rate
        self._wall, self._mono = wall, mono
        return drift if abs(drift) > CLOCK_JUMP_S else None


def _simulated_clock(cfg: TrueupConfig, data_dir: str | None):
    """The simulated site's accelerated clock (trueup/simclock.py) when the configuration
    asks for one, else None (the system clock)."""
    g = cfg.gateway
    if g.kind != "simulated" or (g.sim_speed == 1 and g.sim_start is None):
        return None
    from adapters.store import default_data_dir
    from trueup.simclock import AcceleratedClock

    return AcceleratedClock(Path(data_dir) if data_dir else default_data_dir(), g.sim_speed,
                            g.sim_start_utc())


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _plan_if_due(daemon: Daemon):
    def job() -> None:
        if daemon.replan_due(daemon.clock.now()):
            daemon.plan_job()
    return job


def _now_dt():
    from datetime import UTC, datetime

    return datetime.now(UTC)
