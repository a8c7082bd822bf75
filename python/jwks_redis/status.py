"""The endpoint's status page (`/status`): each key set's keys on a timeline, read from
`JWKS.INFO` and the key set's audit trail, and its verifiers (`JWKS.VERIFIERS`: which
generation each holds, which are behind, how far a CONFIRM promotion has come), as plain
HTML and CSS (no JavaScript).

`collect(client, keys)` reads; `render(sets, ...)` is pure (it takes the clock as an
argument), so the page can be tested without a server.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

import redis

from .client import AuditEntry, KeySetInfo, _audit_entries, _translate, derived_key

__all__ = ["KeySetStatus", "KeyTimeline", "collect", "render", "timelines"]

#: Audit entries read per key set for the retired keys' history (newest first).
AUDIT_ENTRIES = 500


@dataclass
class KeySetStatus:
    """What the page shows for one key set: `info` (None if there is no key set), the audit
    entries read (oldest first), and `error` / `audit_error` if a read failed."""

    key: str
    info: Optional[KeySetInfo] = None
    audit: List[AuditEntry] = field(default_factory=list)
    error: Optional[str] = None
    audit_error: Optional[str] = None
    #: The live verifiers (JWKS.VERIFIERS: dicts with id, generation, current, next,
    #: age_ms, ttl_ms), or None with `verifiers_error` if they could not be read.
    verifiers: Optional[List[dict]] = None
    verifiers_error: Optional[str] = None


@dataclass
class KeyTimeline:
    """One key's life as the page draws it (Unix ms; None = has not happened)."""

    kid: str
    state: str  # next, current, previous, retired
    alg: Optional[str] = None
    added_ms: Optional[int] = None
    promoted_ms: Optional[int] = None
    demoted_ms: Optional[int] = None
    retired_ms: Optional[int] = None
    #: ("promote" or "retire", at_ms): what the lifecycle policy will do to it next.
    scheduled: Optional[tuple] = None


def _why(e: Exception) -> str:
    if isinstance(e, redis.ResponseError):
        e = _translate(e)
    return f"{type(e).__name__}: {e}"


def collect(client: Any, keys: Sequence[str], audit_entries: int = AUDIT_ENTRIES) -> List[KeySetStatus]:
    """Reads each key set's JWKS.INFO, the newest `audit_entries` of its audit trail
    (XREVRANGE) and its live verifiers (JWKS.VERIFIERS). Errors are kept per key set, not raised; redis.ConnectionError and
    redis.TimeoutError are raised (the page answers 503)."""
    from .client import JwksClient

    jwks = JwksClient(client)
    out = []
    for key in keys:
        st = KeySetStatus(key)
        try:
            st.info = jwks.info(key)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except redis.RedisError as e:
            st.error = _why(e)
        if st.info is not None:
            try:
                reply = client.execute_command("XREVRANGE", derived_key(key, "audit"), "+", "-",
                                               "COUNT", audit_entries)
                st.audit = list(reversed(_audit_entries(reply)))
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as e:
                st.audit_error = _why(e)
            try:
                st.verifiers = jwks.verifiers(key)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as e:
                st.verifiers_error = _why(e)
        out.append(st)
    return out


def timelines(st: KeySetStatus) -> List[KeyTimeline]:
    """The published keys (from JWKS.INFO, with what the policy will do next) followed by
    the keys retired within the audit entries read, most recently retired first."""
    info = st.info
    if info is None:
        return []
    policy = info.policy
    nc = info.next_change
    rows: List[KeyTimeline] = []
    for k in info.keys:
        row = KeyTimeline(k.kid, k.state, k.alg, k.added_ms, k.promoted_ms, k.demoted_ms)
        if nc is not None and nc.kid == k.kid:
            row.scheduled = (nc.action, nc.at_ms)
        elif policy is not None and k.state == "next" and policy.promote_after_ms:
            row.scheduled = ("promote", k.added_ms + policy.promote_after_ms)
        elif policy is not None and k.state == "previous" and policy.retire_after_ms and k.demoted_ms:
            row.scheduled = ("retire", k.demoted_ms + policy.retire_after_ms)
        rows.append(row)
    published = {k.kid for k in info.keys}
    # Retired keys: their history from the audit trail.
    history: Dict[str, KeyTimeline] = {}
    for e in st.audit:
        kid = e.fields.get("kid")
        if not kid:
            continue
        t = history.setdefault(kid, KeyTimeline(kid, "retired"))
        if e.action == "JWKS_KEY_ADDED":
            t.added_ms, t.promoted_ms, t.demoted_ms, t.retired_ms = e.time_ms, None, None, None
        elif e.action == "JWKS_KEY_PROMOTED":
            t.promoted_ms, t.demoted_ms = e.time_ms, None
            old = e.fields.get("demoted")
            if old:
                history.setdefault(old, KeyTimeline(old, "retired")).demoted_ms = e.time_ms
        elif e.action == "JWKS_KEY_RETIRED":
            t.retired_ms = e.time_ms
    retired = [t for kid, t in history.items() if kid not in published and t.retired_ms]
    retired.sort(key=lambda t: t.retired_ms, reverse=True)
    return rows + retired


# --------------------------------------------------------------------------- rendering


def utc(ms: Optional[int]) -> str:
    """`2026-12-06 21:04:05 UTC`, or an em dash."""
    if ms is None:
        return "\u2014"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: float) -> str:
    """A short human duration: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    s = int(abs(ms) // 1000)
    if s < 120:
        return f"{s} s"
    m = s // 60
    if m < 120:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def relative(ms: Optional[int], now_ms: int) -> str:
    if ms is None:
        return ""
    delta = ms - now_ms
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0;color:#1d2430;background:#f5f6f8}
header{background:#1d2430;color:#fff;padding:14px 28px}
header h1{font-size:20px;margin:0}
header p{margin:2px 0 0;color:#c5cbd6;font-size:13px}
main{padding:8px 28px 28px;max-width:1200px}
section.keyset{background:#fff;border:1px solid #d9dde4;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{font-size:18px;margin:0 0 10px;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
h3{font-size:15px;margin:18px 0 8px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}
dl.facts dt{color:#5b6472}
dl.facts dd{margin:0;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:14px;overflow-wrap:anywhere}
.timeline{margin:6px 0 2px}
.row{display:grid;grid-template-columns:230px 1fr;align-items:center;height:30px}
.row .kid{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px;overflow:hidden;
 text-overflow:ellipsis;white-space:nowrap;padding-right:10px}
.track{position:relative;height:20px;background:#eef0f4;border-radius:3px}
.seg{position:absolute;top:2px;height:16px;border-radius:3px;min-width:2px}
.seg.next{background:#7aa7e0}.seg.current{background:#2f9e5b}.seg.previous{background:#e0a33a}
.seg.planned{top:6px;height:8px;background:repeating-linear-gradient(90deg,#8a93a3 0 6px,transparent 6px 10px)}
.mark{position:absolute;top:-3px;bottom:-3px;width:0;border-left:2px solid}
.mark.now{border-color:#c2334d}
.mark.due{border-left-style:dashed;border-color:#5b3cc4}
.axis{display:grid;grid-template-columns:230px 1fr;font-size:12px;color:#5b6472}
.axis .scale{position:relative;height:34px}
.axis span{position:absolute;white-space:nowrap;transform:translateX(-50%)}
.axis span.first{transform:none}.axis span.last{transform:translateX(-100%)}
.axis span.now{color:#c2334d;top:16px}
.legend{font-size:13px;color:#5b6472;margin:8px 0 0}
.legend i{display:inline-block;width:14px;height:10px;border-radius:2px;margin:0 4px 0 12px;vertical-align:middle}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:4px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e7ec;vertical-align:top}
th{color:#5b6472;font-weight:600}
td{white-space:nowrap}td.wrap{white-space:normal}
td.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace}
.state{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff}
.state.next{background:#4a7fc4}.state.current{background:#2f9e5b}.state.previous{background:#c98718}
.state.retired{background:#8a93a3}
.error{background:#fde8ec;border:1px solid #f2b8c4;color:#8c1d33;padding:8px 12px;border-radius:6px}
.note{color:#5b6472}
tr.behind td{background:#fff4e0}tr.behind td:first-child{border-left:3px solid #c98718}
.confirm{background:#eef4fb;border:1px solid #c4d6ee;padding:8px 12px;border-radius:6px}
footer{color:#5b6472;font-size:12px;padding:0 28px 24px}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _pct(t: int, lo: int, hi: int) -> float:
    return max(0.0, min(100.0, (t - lo) * 100.0 / (hi - lo)))


def _timeline_html(rows: List[KeyTimeline], now_ms: int, next_due: Optional[int]) -> str:
    times = [now_ms]
    for r in rows:
        times += [t for t in (r.added_ms, r.promoted_ms, r.demoted_ms, r.retired_ms) if t]
        if r.scheduled:
            times.append(r.scheduled[1])
    lo, hi = min(times), max(times)
    span = max(hi - lo, 60_000)
    lo, hi = lo - span // 20, hi + span // 20
    out = ['<div class="timeline" role="img" aria-label="key timeline">']
    # Oldest key on top: the rows read as a staircase of hand-overs.
    for r in sorted(rows, key=lambda r: (r.added_ms or 0, r.kid)):
        segs = []
        end_now = r.retired_ms or now_ms

        def seg(cls: str, a: Optional[int], b: Optional[int], title: str) -> None:
            if a is None or b is None or b < a:
                return
            left, right = _pct(a, lo, hi), _pct(b, lo, hi)
            segs.append(f'<div class="seg {cls}" style="left:{left:.2f}%;width:{max(right - left, 0.2):.2f}%"'
                        f' title="{_e(title)}"></div>')

        stop_next = r.promoted_ms or (r.retired_ms if r.state == "retired" else None) or \
            (end_now if r.state == "next" else None)
        seg("next", r.added_ms, stop_next, f"{r.kid}: next from {utc(r.added_ms)}")
        stop_cur = r.demoted_ms or (r.retired_ms if r.state == "retired" else None) or \
            (now_ms if r.state == "current" else None)
        seg("current", r.promoted_ms, stop_cur, f"{r.kid}: current from {utc(r.promoted_ms)}")
        stop_prev = r.retired_ms or (now_ms if r.state == "previous" else None)
        seg("previous", r.demoted_ms, stop_prev, f"{r.kid}: previous from {utc(r.demoted_ms)}")
        if r.scheduled and r.scheduled[1] > now_ms:
            seg("planned", now_ms, r.scheduled[1],
                f"{r.kid}: {r.scheduled[0]} scheduled at {utc(r.scheduled[1])}")
        marks = f'<div class="mark now" style="left:{_pct(now_ms, lo, hi):.2f}%"></div>'
        if r.scheduled and r.scheduled[1] == next_due:
            marks += f'<div class="mark due" style="left:{_pct(next_due, lo, hi):.2f}%"></div>'
        out.append(f'<div class="row"><div class="kid" title="{_e(r.kid)}">{_e(r.kid)}</div>'
                   f'<div class="track">{"".join(segs)}{marks}</div></div>')
    now_left = _pct(now_ms, lo, hi)
    ticks = [f'<span class="first" style="left:0%">{_e(utc(lo))}</span>',
             f'<span class="last" style="left:100%">{_e(utc(hi))}</span>']
    ticks.append(f'<span class="now" style="left:{now_left:.2f}%">now</span>')
    out.append(f'<div class="axis"><div></div><div class="scale">{"".join(ticks)}</div></div>')
    out.append('</div><p class="legend">'
               '<i style="background:#7aa7e0"></i>next'
               '<i style="background:#2f9e5b"></i>current'
               '<i style="background:#e0a33a"></i>previous'
               '<i style="background:repeating-linear-gradient(90deg,#8a93a3 0 4px,transparent 4px 6px)"></i>'
               'scheduled by the policy'
               '<i style="background:#c2334d;width:3px"></i>now</p>')
    return "".join(out)


def _table_html(rows: List[KeyTimeline], now_ms: int) -> str:
    out = ['<table><thead><tr><th>kid</th><th>alg</th><th>state</th><th>added</th>'
           '<th>promoted</th><th>demoted</th><th>retired</th><th>next scheduled change</th>'
           '</tr></thead><tbody>']
    for r in rows:
        sched = "\u2014"
        if r.scheduled:
            sched = f"{_e(r.scheduled[0])} at {_e(utc(r.scheduled[1]))} ({_e(relative(r.scheduled[1], now_ms))})"
        out.append(
            f'<tr><td class="mono">{_e(r.kid)}</td><td>{_e(r.alg or "")}</td>'
            f'<td><span class="state {_e(r.state)}">{_e(r.state)}</span></td>'
            f'<td>{_e(utc(r.added_ms))}</td><td>{_e(utc(r.promoted_ms))}</td>'
            f'<td>{_e(utc(r.demoted_ms))}</td><td>{_e(utc(r.retired_ms))}</td><td class="wrap">{sched}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _policy_text(info: KeySetInfo) -> str:
    p = info.policy
    if p is None or not (p.promote_after_ms or p.retire_after_ms or p.confirm_pct):
        return "none (every change is a manual JWKS.ROTATE)"
    parts = []
    parts.append(f"PROMOTE-AFTER {p.promote_after_ms} ms ({duration(p.promote_after_ms)})"
                 if p.promote_after_ms else "PROMOTE-AFTER off")
    parts.append(f"RETIRE-AFTER {p.retire_after_ms} ms ({duration(p.retire_after_ms)})"
                 if p.retire_after_ms else "RETIRE-AFTER off")
    if p.confirm_pct:
        wait = f", MIN-WAIT {p.min_wait_ms} ms ({duration(p.min_wait_ms)})" if p.min_wait_ms else ""
        parts.append(f"CONFIRM {p.confirm_pct} %{wait}")
    return ", ".join(parts)


def _verifiers_html(st: KeySetStatus, now_ms: int) -> str:
    """Who holds what: a summary line (with a CONFIRM's progress) and one row per live
    verifier, those behind the key set's generation marked."""
    info = st.info
    out = ["<h3>Verifiers</h3>"]
    if st.verifiers_error:
        return "".join(out + [f'<p class="error">The verifiers could not be read '
                              f'({_e(st.verifiers_error)}).</p>'])
    conf = getattr(info, "confirmation", None)
    if conf:
        state = "confirmed" if conf.get("confirmed") else "waiting"
        wait = ""
        if conf.get("min_wait_until_ms", 0) > now_ms:
            wait = f", MIN-WAIT ends {relative(conf['min_wait_until_ms'], now_ms)}"
        out.append(f'<p class="confirm">CONFIRM {_e(conf.get("confirm_pct"))} % for '
                   f'{_e(conf.get("kid"))}: {_e(conf.get("holding"))} of {_e(conf.get("live"))} '
                   f'live verifiers hold it, {_e(conf.get("needed"))} needed ({state}{wait}).</p>')
    rows = st.verifiers or []
    if not rows:
        out.append('<p class="note">No verifier has reported in the last ack TTL. KeyCache '
                   '(Python, Node) and jwks-endpoint report what they hold with JWKS.ACK; '
                   'verifiers that do not are not counted.</p>')
        return "".join(out)
    behind = [v for v in rows if v["generation"] < info.generation]
    out.append(f'<p>{len(rows)} live, {len(rows) - len(behind)} on generation '
               f'{info.generation}, {len(behind)} behind.</p>')
    out.append('<table class="verifiers"><thead><tr><th>verifier</th><th>generation</th>'
               '<th>current key</th><th>next keys</th><th>last ack</th><th>expires</th>'
               '</tr></thead><tbody>')
    for v in rows:
        cls = ' class="behind"' if v["generation"] < info.generation else ""
        out.append(
            f'<tr{cls}><td>{_e(v["id"])}</td><td>{_e(v["generation"])}</td>'
            f'<td>{"holds" if v["current"] else "missing"}</td>'
            f'<td>{"holds" if v["next"] else "missing"}</td>'
            f'<td>{_e(duration(v["age_ms"]))} ago</td><td>in {_e(duration(v["ttl_ms"]))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _keyset_html(st: KeySetStatus, now_ms: int, served: Optional[dict]) -> str:
    out = [f'<section class="keyset"><h2>{_e(st.key)}</h2>']
    if st.error:
        out.append(f'<p class="error">Cannot read this key set: {_e(st.error)}</p></section>')
        return "".join(out)
    info = st.info
    if info is None:
        out.append('<p class="note">No key set at this name.</p></section>')
        return "".join(out)
    nc = info.next_change
    next_text = "none scheduled"
    if nc is not None:
        next_text = f"{nc.action} {nc.kid} at {utc(nc.at_ms)} ({relative(nc.at_ms, now_ms)})"
    ttl = "none cached" if info.cache_ttl_ms < 0 else \
        f"cached, expires in {duration(info.cache_ttl_ms)} (then refilled on the next read)"
    facts = [
        ("generation", info.generation),
        ("ETag", info.etag or "\u2014"),
        ("current key", info.current or "none"),
        ("published", ", ".join(k.kid for k in info.keys) or "none"),
        ("policy", _policy_text(info)),
        ("next scheduled change", next_text),
        ("cached document", ttl),
        ("audit entries", info.audit_length),
    ]
    if served is not None:
        facts.append(("this endpoint's KeyCache", served["text"]))
    out.append('<dl class="facts">')
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts]
    out.append("</dl>")
    rows = timelines(st)
    out.append("<h3>Keys on a timeline</h3>")
    if rows:
        out.append(_timeline_html(rows, now_ms, nc.at_ms if nc else None))
        out.append(_table_html(rows, now_ms))
    else:
        out.append('<p class="note">No keys.</p>')
    if st.audit_error:
        out.append(f'<p class="error">Retired keys are not shown: the audit trail could not be '
                   f'read ({_e(st.audit_error)}).</p>')
    out.append(_verifiers_html(st, now_ms))
    out.append("</section>")
    return "".join(out)


def render(sets: Sequence[KeySetStatus], *, now_ms: Optional[int] = None,
           served_key: Optional[str] = None, cache: Any = None, refresh_s: int = 30) -> str:
    """The page. `served_key` and `cache` (the endpoint's KeyCache, or None) add what the
    endpoint itself holds; `refresh_s` is the page's meta refresh (0: none)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    served = None
    if served_key is not None:
        if cache is None:
            text = "none (--no-keycache): JWKS.GET META per request"
        else:
            s = cache.snapshot
            held = "nothing loaded yet" if s is None else \
                ("no key set" if not s.exists else f"generation {s.generation}, {s.etag}")
            state = "subscribed" if cache.connected else "not connected"
            fresh = "fresh" if cache.fresh else "not fresh (serving from Redis)"
            text = f"{state}, {fresh}, holds {held}"
        served = {"text": text}
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    body = "".join(_keyset_html(st, now_ms, served if st.key == served_key else None)
                   for st in sets)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'{refresh}<title>JWKS status</title><style>{_CSS}</style></head><body>'
        f'<header><h1>JWKS status</h1><p>{len(sets)} key set{"s" if len(sets) != 1 else ""} '
        f'\u00b7 as of {_e(utc(now_ms))}</p></header>'
        f'<main>{body}</main>'
        '<footer>Read from JWKS.INFO and the audit trail on every load'
        f'{f"; this page reloads itself every {refresh_s} s" if refresh_s else ""}. '
        'The JWKS document is at '
        '<a href="/.well-known/jwks.json">/.well-known/jwks.json</a>.</footer>'
        '</body></html>'
    )
