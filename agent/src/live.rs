//! Live mode: the event loop over the datapath (`datapath`): read the ring buffer, correlate,
//! fire timers, publish the status board, follow interfaces and SIGHUP, write the events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use hbwatch_common::event::{EventKind, RawEvent, RAW_EVENT_SIZE};
use hbwatch_common::flow::FlowState;
use hbwatch_common::key::FlowKey;
use hbwatch_common::params::ProtoParams;
use hbwatch_common::proto::Protocol;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::clock::WallClock;
use crate::convert::Converter;
use crate::correlate::{Config, Correlator, Ctx};
use crate::datapath::{readable_fd, AttachMode, Datapath, IfaceChange};
use crate::event::{Action, Event, Level, Said};
use crate::locate::recorder::Recorder;
use crate::metrics::{self, Metrics};
use crate::sink::{Filtered, Sink};

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Options of `hbwatch run`.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// Also watch each interface's egress (TC): heartbeats this host sends.
    pub egress: bool,
    /// Kernel flow-table entries (`agent.max_associations`, resolved).
    pub max_associations: u32,
    pub ports: BTreeMap<u32, Protocol>,
    pub params: BTreeMap<Protocol, ProtoParams>,
    pub hostname: String,
    /// How often kernel counters are checked for ring-buffer loss.
    pub poll: Duration,
    pub config_digest: String,
    /// `heartbeat.summary` period; `None` = off.
    pub summary_period: Option<Duration>,
    pub sip: crate::correlate::sip::SipConfig,
    /// Serve Prometheus metrics here.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Its TLS and basic auth (`[metrics]`).
    pub metrics_web: crate::metrics::WebConfig,
    /// Where SIGHUP re-reads tunables from (none: SIGHUP is logged and ignored).
    pub reload: Option<crate::config::Reload>,
    /// Drop every capability but CAP_BPF and CAP_NET_ADMIN once attached (`hbwatch
    /// run`; not when the agent runs inside another command such as the demo).
    pub drop_privileges: bool,
    /// Publish status snapshots here once per poll tick (`hbwatch top`, `--tui`).
    pub status: Option<crate::top::status::Publisher>,
    /// SIP users hashed or redacted before any output or the board sees an event.
    pub privacy: crate::privacy::Privacy,
    /// Flight recorder: the last minutes of heartbeats as pcapng (`--record`).
    pub record: Option<crate::locate::recorder::RecordSpec>,
}

/// How often correlation timers are looked at and the ring buffer drained: the kernel
/// submits records without waking the reader (agent-ebpf `SUBMIT_FLAGS`), so this tick
/// is what bounds a record's delay.
const TIMER_TICK: Duration = Duration::from_millis(10);
/// Records may reach userspace this long after their packet: timers wait for them.
const RECORD_SLACK_NS: u64 = 20_000_000;
/// Records of different CPUs reach the ring buffer out of time order by at most about
/// this much (the clock is read before the record is reserved): before each record, the
/// timers due this long before its time fire. Without it a heartbeat that came just after
/// its deadline, drained in the same tick, was late where offline analysis (timers in
/// time order) said missed.
const ORDER_SLACK_NS: u64 = 2_000_000;

/// Most records handled per wake-up before yielding, so signals and timers stay responsive.
const MAX_BATCH: usize = 8192;

/// Runs until SIGINT/SIGTERM, writing NDJSON events to `out`.
pub async fn run(opts: LiveOptions, out: &mut dyn Sink) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    run_until(opts, out, stop).await
}

/// Runs until `stop` completes, then drains, detaches and reports `agent.stopped`.
pub async fn run_until(
    opts: LiveOptions,
    out: &mut dyn Sink,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = match opts.metrics_listen {
        Some(addr) => {
            let m = Arc::new(Metrics::new());
            metrics::serve(addr, m.clone(), &opts.metrics_web).await?;
            Some(m)
        }
        None => None,
    };
    match metrics.clone() {
        Some(m) => run_inner(opts, &mut Filtered::new(out, m.clone()), Some(&m), stop).await,
        None => run_inner(opts, out, None, stop).await,
    }
}

async fn run_inner(
    mut opts: LiveOptions,
    out: &mut dyn Sink,
    metrics: Option<&Metrics>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let status = opts.status.clone();
    let mut tapped;
    let out: &mut dyn Sink = match status.clone() {
        Some(p) => {
            tapped = crate::sink::Filtered::new(out, p);
            &mut tapped
        }
        None => out,
    };
    // Outermost, so that the board's events pane gets events with users already hidden.
    let mut private = crate::sink::Filtered::new(out, opts.privacy.clone());
    let out: &mut dyn Sink = &mut private;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut dp =
        Datapath::load_sized(&opts.ports, &opts.params, None, Some(opts.max_associations))?;
    dp.spawn_log_forwarder();
    for iface in &opts.interfaces {
        dp.attach(iface, opts.mode)?;
        if opts.egress {
            dp.attach_egress(iface)?;
        }
    }
    // Routine heartbeats stay in the kernel, but for a flight recording, which keeps
    // every heartbeat as it comes.
    let held = if opts.record.is_none() {
        dp.hold_routine_beats(true, &opts.params)?;
        Some(dp.flow_table(metrics)?)
    } else {
        None
    };
    let held = held
        .as_ref()
        .map(|h| h as &dyn crate::correlate::held::Held);
    if opts.drop_privileges {
        crate::privileges::drop_after_load();
    }
    let mut conv = Converter {
        hostname: opts.hostname.clone(),
        interfaces: dp.ifnames.clone(),
        fixed_interface: None,
    };
    let mut clock = WallClock::new();
    let started = lifecycle(&conv, &dp, Action::AgentStarted, &opts.config_digest, None);
    write_events(out, &[started])?;

    let mut ring = readable_fd(dp.take_ring()?)?;
    let mut tick = tokio::time::interval(opts.poll);
    let mut timers = tokio::time::interval(TIMER_TICK);
    timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut correlator = Correlator::new(Config {
        params: opts.params.clone(),
        summary_period_ns: opts.summary_period.map(|d| d.as_nanos() as u64),
        sip: opts.sip.clone(),
        counts: true,
        totals: false,
    });
    let mut lost_reported = 0u64;
    let mut evictions_reported = 0u64;
    let capacity = dp.flow_capacity();
    info!("kernel flow table: {capacity} associations");
    let mut sink_losses = crate::sink::LossTracker::default();
    let mut records_read = RecordsRead::default();
    let mut batch: Vec<Event> = Vec::with_capacity(256);
    let mut recorder = opts.record.as_ref().map(Recorder::new).transpose()?;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let ctx = Ctx { conv: &conv, clock: &clock, held };
                let d = drain(guard.get_inner_mut(), &mut correlator, &ctx, &mut batch, metrics, recorder.as_mut());
                records_read.add(&d);
                let drained = d.empty;
                write_events(out, &batch)?;
                batch.clear();
                if drained {
                    guard.clear_ready();
                }
            }
            _ = timers.tick() => {
                let ctx = Ctx { conv: &conv, clock: &clock, held };
                while !drain_counted(ring.get_mut(), &mut correlator, &ctx, &mut batch, &mut records_read, metrics, recorder.as_mut()) {}
                let now = monotonic_ns().saturating_sub(RECORD_SLACK_NS);
                correlator.advance(now, &ctx, &mut batch);
                write_events(out, &batch)?;
                batch.clear();
            }
            _ = tick.tick() => {
                clock = WallClock::new();
                if report_loss(&dp, &conv, &mut lost_reported, out)? {
                    resync(&dp, &mut correlator);
                }
                if held.is_some() && status.as_ref().is_some_and(|p| p.watched()) {
                    // The board's ages count the held beats too, while someone watches
                    // (one map lookup per association). Metrics count them when taken.
                    let ctx = Ctx { conv: &conv, clock: &clock, held };
                    let now = monotonic_ns().saturating_sub(RECORD_SLACK_NS);
                    correlator.take_all_held(now, &ctx, &mut batch);
                    write_events(out, &batch)?;
                    batch.clear();
                }
                if report_evictions(&correlator, capacity, &conv, &mut evictions_reported, dp.holds(), out)?
                    && dp.holds()
                {
                    // Held beats of an evicted association are lost with it: with a table
                    // too small for the site, every heartbeat is a record again.
                    warn!("kernel flow table full: routine heartbeats no longer held");
                    dp.hold_routine_beats(false, &opts.params)?;
                }
                let lost = sink_losses.check(out, &conv.observer(None), WallClock::now_unix_ns());
                write_events(out, &lost)?;
                let changes = dp.watch_interfaces(opts.mode, opts.egress);
                if !changes.is_empty() {
                    conv.interfaces = dp.ifnames.clone();
                    let evs: Vec<Event> = changes.iter().map(|c| interface_event(&conv, c)).collect();
                    write_events(out, &evs)?;
                }
                if let Some(p) = status.as_ref().filter(|p| p.watched()) {
                    p.publish(&correlator, monotonic_ns().saturating_sub(RECORD_SLACK_NS));
                }
                if let Some(m) = metrics {
                    if let Ok(c) = dp.counters() {
                        m.kernel(&c);
                    }
                    m.associations(&correlator.health());
                    m.flow_table(capacity, correlator.reannounced());
                    m.outputs(&out.each_stats());
                }
            }
            _ = sighup.recv() => {
                // Files opened again by name (logrotate's postrotate sends SIGHUP).
                out.reopen();
                let ev = reload(&mut opts, &mut dp, &mut correlator, &conv);
                if let Some(m) = metrics {
                    m.reloaded(ev.log.level == Level::Info);
                }
                write_events(out, &[ev])?;
            }
            _ = &mut stop => break,
        }
    }
    // Last records and losses before detaching.
    let ctx = Ctx {
        conv: &conv,
        clock: &clock,
        held,
    };
    while !drain_counted(
        ring.get_mut(),
        &mut correlator,
        &ctx,
        &mut batch,
        &mut records_read,
        metrics,
        recorder.as_mut(),
    ) {
        write_events(out, &batch)?;
        batch.clear();
    }
    if let Some(r) = recorder.as_mut() {
        r.flush();
    }
    write_events(out, &batch)?;
    let _ = report_loss(&dp, &conv, &mut lost_reported, out)?;
    report_evictions(
        &correlator,
        capacity,
        &conv,
        &mut evictions_reported,
        false,
        out,
    )?;
    let counters = dp.counters().ok().map(|mut c| {
        c.insert("records_read", records_read.records);
        c.insert("heartbeat_records_read", records_read.heartbeats);
        c.extend(correlator.named_counters());
        c
    });
    let stopped_template = lifecycle(
        &conv,
        &dp,
        Action::AgentStopped,
        &opts.config_digest,
        counters,
    );
    drop(ring);
    drop(dp); // detaches XDP from every interface and unloads the program
    info!("detached; exiting");
    write_events(out, &[stopped_template])?;
    let lost = sink_losses.check(out, &conv.observer(None), WallClock::now_unix_ns());
    write_events(out, &lost)?;
    Ok(())
}

/// What one [`drain`] call did.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    /// Records taken off the ring buffer.
    pub records: usize,
    /// Of those, records of heartbeats of known associations (`Heartbeat`, `Beats`).
    pub heartbeats: usize,
    /// The ring buffer is empty.
    pub empty: bool,
}

/// Ring-buffer records read over a run (`agent.stopped`'s counters).
#[derive(Debug, Default)]
struct RecordsRead {
    records: u64,
    heartbeats: u64,
}

impl RecordsRead {
    fn add(&mut self, d: &Drained) {
        self.records += d.records as u64;
        self.heartbeats += d.heartbeats as u64;
    }
}

/// [`drain`], adding the records read to `records_read`; true when the ring is empty.
#[allow(clippy::too_many_arguments)]
fn drain_counted(
    ring: &mut RingBuf<MapData>,
    correlator: &mut Correlator,
    ctx: &Ctx,
    batch: &mut Vec<Event>,
    records_read: &mut RecordsRead,
    metrics: Option<&Metrics>,
    recorder: Option<&mut Recorder>,
) -> bool {
    let d = drain(ring, correlator, ctx, batch, metrics, recorder);
    records_read.add(&d);
    d.empty
}

/// Reads up to MAX_BATCH records into correlation. Public for the event-pipeline
/// benchmark, which drives exactly this path.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    correlator: &mut Correlator,
    ctx: &Ctx,
    batch: &mut Vec<Event>,
    metrics: Option<&Metrics>,
    mut recorder: Option<&mut Recorder>,
) -> Drained {
    let mut heartbeats = 0;
    for records in 0..MAX_BATCH {
        let Some(item) = ring.next() else {
            return Drained {
                records,
                heartbeats,
                empty: true,
            };
        };
        match RawEvent::from_bytes(&item) {
            Some(raw) => {
                if raw.carries_heartbeats() {
                    heartbeats += 1;
                }
                // SIP records carry their captured bytes after the header, `Beats`
                // records the held beats.
                let payload = if raw.kind == EventKind::SipMessage as u8 {
                    item.get(RAW_EVENT_SIZE..RAW_EVENT_SIZE + raw.aux as usize)
                } else if raw.kind == EventKind::Beats as u8 {
                    item.get(RAW_EVENT_SIZE..)
                } else {
                    None
                }
                .unwrap_or(&[]);
                if EventKind::from_u8(raw.kind).is_none() {
                    warn!("ring buffer record of unknown kind {}", raw.kind);
                    continue;
                }
                if let Some(m) = metrics {
                    m.record(&raw);
                }
                if let Some(r) = recorder.as_mut() {
                    r.record(&raw, payload, ctx.clock.unix_ns(raw.ts_ns));
                }
                correlator.advance(raw.ts_ns.saturating_sub(ORDER_SLACK_NS), ctx, batch);
                correlator.on_record(&raw, payload, ctx, batch);
            }
            None => warn!("short ring buffer record ({} bytes)", item.len()),
        }
    }
    Drained {
        records: MAX_BATCH,
        heartbeats,
        empty: false,
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `agent.flow_table_full` when associations came back since the last call after the
/// kernel flow table (`capacity` entries) evicted them.
/// Reports evictions from the kernel flow table since the last call (`agent.flow_table_full`);
/// true if there were any. `stops_holding`: routine heartbeats held in the kernel until
/// now no longer are (said once).
fn report_evictions(
    correlator: &Correlator,
    capacity: u32,
    conv: &Converter,
    reported: &mut u64,
    stops_holding: bool,
    out: &mut dyn Sink,
) -> anyhow::Result<bool> {
    let total = correlator.reannounced();
    if total <= *reported {
        return Ok(false);
    }
    let delta = total - *reported;
    *reported = total;
    let holding = if stops_holding {
        "; routine heartbeats now go up one record each instead of staying in the table (an evicted association's would be lost with it)"
    } else {
        ""
    };
    let message = format!(
        "the kernel flow table ({capacity} associations) is full: {delta} evicted associations were seen again ({total} since start); counted as heartbeats, but gaps, re-sends and restarts across an eviction are not seen: raise agent.max_associations (--max-associations){holding}"
    );
    let mut ev = Event::new(
        crate::event::rfc3339_micros(WallClock::now_unix_ns()),
        conv.observer(None),
        Said {
            action: Action::AgentFlowTableFull,
            level: Level::Warning,
            message,
        },
    );
    ev.heartbeat.count = Some(delta);
    write_events(out, &[ev])?;
    Ok(true)
}

/// Reports ring-buffer loss since the last call; true if there was any.
fn report_loss(
    dp: &Datapath,
    conv: &Converter,
    reported: &mut u64,
    out: &mut dyn Sink,
) -> anyhow::Result<bool> {
    let lost = dp.counters()?.get("ringbuf_lost").copied().unwrap_or(0);
    if lost > *reported {
        let delta = lost - *reported;
        *reported = lost;
        let message = format!("{delta} events lost in the kernel ring buffer ({lost} since start): userspace fell behind");
        let mut ev = Event::new(
            crate::event::rfc3339_micros(WallClock::now_unix_ns()),
            conv.observer(None),
            Said {
                action: Action::AgentEventsLost,
                level: Level::Error,
                message,
            },
        );
        ev.heartbeat.lost = Some(delta);
        ev.heartbeat.where_ = Some("kernel-ringbuf".into());
        write_events(out, &[ev])?;
        return Ok(true);
    }
    Ok(false)
}

/// Timers restart from the flow table's last request times: lost heartbeat records
/// are not silence.
fn resync(dp: &Datapath, correlator: &mut Correlator) {
    let Some(map) = dp.ebpf().map("FLOWS") else {
        return;
    };
    let Ok(flows) = aya::maps::HashMap::<&MapData, FlowKey, FlowState>::try_from(map) else {
        warn!("FLOWS map unreadable: timers not resynchronised after loss");
        return;
    };
    for key in correlator.keys() {
        if let Ok(st) = flows.get(&key, 0) {
            correlator.resync(&key, st.last_req_ns, st.last_seq);
            correlator.resync_held(&key, &st);
        }
    }
}

/// `agent.interface_lost`, `agent.interface_attached` or `agent.attach_failed`.
fn interface_event(conv: &Converter, change: &IfaceChange) -> Event {
    let now = crate::event::rfc3339_micros(WallClock::now_unix_ns());
    let (action, level, msg, attachment) = match change {
        IfaceChange::Lost(name) => (
            Action::AgentInterfaceLost,
            Level::Error,
            format!("{name} disappeared: nothing is watched there until it comes back"),
            None,
        ),
        IfaceChange::Back(a) => (
            Action::AgentInterfaceAttached,
            Level::Info,
            format!("{} is back: attached again in {} mode", a.name, a.mode),
            Some(a.clone()),
        ),
        IfaceChange::AttachFailed(name, why) => (
            Action::AgentAttachFailed,
            Level::Error,
            format!("{name} is back but could not be attached: {why}"),
            None,
        ),
    };
    let mut ev = Event::new(
        now,
        conv.observer(None),
        Said {
            action,
            level,
            message: msg,
        },
    );
    ev.heartbeat.interfaces = attachment.map(|a| vec![a]);
    ev
}

/// SIGHUP: re-reads the config file's tunables into the kernel tables and the
/// correlator; state (flows, associations, timers) stays. The event says what happened.
fn reload(
    opts: &mut LiveOptions,
    dp: &mut Datapath,
    correlator: &mut Correlator,
    conv: &Converter,
) -> Event {
    let result = match &opts.reload {
        None => Err("no configuration file (--config) to reload".to_string()),
        Some(r) => r.load().map_err(|e| e.to_string()).and_then(|eff| {
            dp.retune(&opts.ports, &eff.ports, &eff.params)
                .map_err(|e| format!("{e:#}"))
                .map(|()| eff)
        }),
    };
    let now = crate::event::rfc3339_micros(WallClock::now_unix_ns());
    match result {
        Ok(eff) => {
            correlator.set_params(eff.params.clone());
            correlator.set_summary_period(eff.summary_period.map(|d| d.as_nanos() as u64));
            opts.config_digest =
                crate::config_digest(&format!("{:?}{:?}{:?}", eff.ports, eff.params, opts.mode));
            opts.ports = eff.ports;
            opts.params = eff.params;
            opts.summary_period = eff.summary_period;
            info!("configuration reloaded (digest {})", opts.config_digest);
            let mut ev = Event::new(
                now,
                conv.observer(None),
                Said {
                    action: Action::AgentReloaded,
                    level: Level::Info,
                    message:
                        "configuration reloaded: ports and per-protocol rules applied, state kept"
                            .to_string(),
                },
            );
            ev.heartbeat.config_digest = Some(opts.config_digest.clone());
            ev
        }
        Err(why) => {
            warn!("SIGHUP: configuration not reloaded: {why}");
            let mut ev = Event::new(
                now,
                conv.observer(None),
                Said {
                    action: Action::AgentReloadFailed,
                    level: Level::Error,
                    message: format!("configuration not reloaded, the previous one stays: {why}"),
                },
            );
            ev.heartbeat.config_digest = Some(opts.config_digest.clone());
            ev
        }
    }
}

fn lifecycle(
    conv: &Converter,
    dp: &Datapath,
    action: Action,
    digest: &str,
    counters: Option<BTreeMap<&'static str, u64>>,
) -> Event {
    let names: Vec<String> = dp
        .attachments
        .iter()
        .map(|a| format!("{} ({})", a.name, a.mode))
        .collect();
    let what = if action == Action::AgentStarted {
        "watching"
    } else {
        "stopped watching"
    };
    let mut ev = Event::new(
        crate::event::rfc3339_micros(WallClock::now_unix_ns()),
        conv.observer(None),
        Said {
            action,
            level: Level::Info,
            message: format!(
                "hbwatch {} {what} {}",
                env!("CARGO_PKG_VERSION"),
                names.join(", ")
            ),
        },
    );
    ev.heartbeat.interfaces = Some(dp.attachments.clone());
    ev.heartbeat.config_digest = Some(digest.to_string());
    ev.heartbeat.counters = counters;
    ev
}

pub fn write_events(out: &mut dyn Sink, events: &[Event]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    for ev in events {
        out.send(ev)?;
    }
    out.flush()
}
