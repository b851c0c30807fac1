// The customer 360 page: searches the lookup API and shows one customer whole.
// Every value is written with textContent (never as HTML): profile data is untrusted.
"use strict";

const $ = (id) => document.getElementById(id);
const token = $("token");
token.value = sessionStorage.getItem("unicus-token") || "";
token.addEventListener("change", () => sessionStorage.setItem("unicus-token", token.value));

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(table, cells) {
  const tr = el("tr");
  cells.forEach((c, i) => {
    const td = el(i === 0 ? "th" : "td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c == null ? "" : String(c);
    tr.appendChild(td);
  });
  table.appendChild(tr);
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

async function api(path, options) {
  const response = await fetch(path, Object.assign({
    headers: { "Authorization": "Bearer " + token.value, "Content-Type": "application/json" },
    redirect: "follow",
  }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = (body && body.error) || {};
    throw new Error((e.code || response.status) + ": " + (e.message || response.statusText));
  }
  return body;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function show(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object" && "line1" in value) {
    return [value.line1, value.line2, [value.postal_code, value.city].filter(Boolean).join(" "), value.state, value.country]
      .filter(Boolean).join(", ");
  }
  if (typeof value === "object") {
    return Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => k + ": " + v).join(", ");
  }
  return String(value);
}

function sourced(field) {
  const span = el("span");
  span.appendChild(el("span", show(field.value)));
  span.appendChild(el("div", "from " + field.source + " · " + field.at + " · " + field.event_id, "src"));
  return span;
}

function renderRecord(r) {
  $("result").hidden = false;
  const name = r.person || {};
  $("name").textContent = [name.first_name, name.last_name].filter(Boolean).map((f) => f.value).join(" ") || "(no name)";
  $("customer-id").textContent = r.customer_id;
  $("stage").textContent = r.lifecycle_stage || "profiling denied";
  const kpis = $("kpis"); clear(kpis);
  // RFM, lifetime value and segments are null when the customer denies profiling.
  const seg = r.segments || null;
  const currency = r.rfm ? r.rfm.currency : "";
  const totals = Object.entries((r.orders || {}).totals || {}).map(([c, v]) => v + " " + c).join(", ") || "0";
  const ltv = seg ? seg.clv + " " + currency + " (" + seg.clv_horizon_days + " d)" : "not profiled";
  const rfm = seg && seg.rfm ? seg.rfm.score + " (R " + seg.rfm.recency + " F " + seg.rfm.frequency + " M " + seg.rfm.monetary + ")"
    : (seg ? "no order" : "not profiled");
  for (const [k, v] of [["lifetime value", ltv], ["purchases", totals], ["orders", (r.orders || {}).count || 0],
    ["RFM", rfm], ["VIP", seg ? (seg.vip ? "yes" : "no") : "—"], ["source profiles", r.source_profiles],
    ["open carts", r.open_carts]]) {
    kpis.appendChild(el("dt", k)); kpis.appendChild(el("dd", v));
  }
  const person = $("person"); clear(person);
  for (const [k, f] of Object.entries(r.person || {})) row(person, [k, sourced(f)]);
  for (const [k, f] of Object.entries(r.attributes || {})) row(person, ["attributes." + k, sourced(f)]);
  const ids = $("identifiers"); clear(ids);
  for (const [k, values] of Object.entries(r.identifiers || {})) row(ids, [k, values.join(", ")]);
  const channels = $("channels"); clear(channels);
  row(channels, ["channel", "events", "first seen", "last seen"]);
  for (const [c, a] of Object.entries(r.channels || {})) row(channels, [c, a.events, a.first_seen, a.last_seen]);
  const consents = $("consents"); clear(consents);
  row(consents, ["purpose", "channel", "decision", "allowed now on"]);
  for (const [purpose, allowed] of Object.entries(r.allowed_channels || {})) {
    const stated = (r.consents || {})[purpose] || {};
    const names = Object.keys(stated);
    const allowedText = allowed.join(", ") || "none";
    if (names.length === 0) row(consents, [purpose, "—", "no decision", allowedText]);
    for (const channel of names) {
      const d = stated[channel];
      const verdict = el("span", (d.granted ? "granted" : "denied") + (d.in_force ? "" : " (expired)"), d.granted ? "yes" : "no");
      row(consents, [purpose, channel, verdict, allowedText]);
    }
  }
  const purchased = $("purchased"); clear(purchased);
  for (const sku of r.recently_purchased || []) purchased.appendChild(el("li", sku));
  // Present only when the deployment defines audiences or traits.
  const defined = Array.isArray(r.audiences) || (r.traits && typeof r.traits === "object");
  $("audiences-card").hidden = !defined;
  const audiences = $("audiences"); clear(audiences);
  for (const name of r.audiences || []) audiences.appendChild(el("li", name, "badge"));
  if (defined && (r.audiences || []).length === 0) audiences.appendChild(el("li", "in no audience"));
  const traits = $("traits"); clear(traits);
  for (const [k, v] of Object.entries(r.traits || {})) row(traits, [k, v === null ? "—" : show(v)]);
  renderEnrichment(r);
}

// Present when the deployment enriches golden records; `null` when profiling is denied.
function renderEnrichment(r) {
  $("enrichment-card").hidden = !("enrichment" in r);
  const table = $("enrichment"); clear(table);
  const en = r.enrichment;
  if (en === null || en === undefined) {
    if ("enrichment" in r) row(table, ["profiling", "denied: nothing inferred"]);
    return;
  }
  const inferred = (value, source, at) => {
    const span = el("span");
    span.appendChild(el("span", value));
    span.appendChild(el("div", "from " + source + (at ? " · " + at : ""), "src"));
    return span;
  };
  const list = (items) => items.map((a) => a.name + " (" + a.score + ")").join(", ") || "—";
  const latest = (items) => items.length ? items.map((a) => a.at).sort().pop() : null;
  row(table, ["categories", inferred(list(en.categories || []), "views, carts, purchases", latest(en.categories || []))]);
  row(table, ["brands", inferred(list(en.brands || []), "views, carts, purchases", latest(en.brands || []))]);
  if (en.home_store) {
    const s = en.home_store.value;
    const text = [s.name || s.store, s.city].filter(Boolean).join(", ") + " · " + s.events + " events";
    row(table, ["home store", inferred(text, en.home_store.source, en.home_store.at)]);
  }
  if (en.home_region) row(table, ["home region", inferred(en.home_region.value, en.home_region.source, en.home_region.at)]);
  if (en.price_band) {
    const p = en.price_band;
    row(table, ["price band", inferred(p.value + " · mean " + p.average_price + " over " + p.items + " items", p.source, p.at)]);
  }
  for (const [purpose, c] of Object.entries(en.contact || {})) {
    const text = c.value + (c.hour === null || c.hour === undefined ? "" : " around " + c.hour + ":00 UTC");
    row(table, ["contact for " + purpose, inferred(text, c.source, c.at)]);
  }
  if (en.next_purchase) {
    const n = en.next_purchase;
    row(table, ["next purchase", inferred(n.value + " (every " + n.interval_days + " d, " + n.orders + " orders)", n.source, n.at)]);
  }
}

function renderGraph(x) {
  const graph = $("graph"); clear(graph);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 800 320");
  const sps = x.source_profiles || [];
  const cx = 400, cy = 160;
  const node = (x0, y0, label, sub, fill) => {
    const g = document.createElementNS(ns, "g");
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", x0); c.setAttribute("cy", y0); c.setAttribute("r", 22); c.setAttribute("fill", fill);
    g.appendChild(c);
    for (const [i, t] of [label, sub].entries()) {
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", x0); text.setAttribute("y", y0 + 36 + i * 13); text.setAttribute("text-anchor", "middle");
      text.textContent = t; g.appendChild(text);
    }
    svg.appendChild(g);
  };
  sps.forEach((sp, i) => {
    const angle = (2 * Math.PI * i) / Math.max(sps.length, 1) - Math.PI / 2;
    const x0 = cx + 300 * Math.cos(angle) * 0.9, y0 = cy + 110 * Math.sin(angle);
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", cx); line.setAttribute("y1", cy); line.setAttribute("x2", x0); line.setAttribute("y2", y0);
    line.setAttribute("stroke", "#98a2b3");
    svg.insertBefore(line, svg.firstChild);
    const j = sp.joined || {};
    const how = j.method === "new" ? "first seen" : j.method + (j.rule ? " · " + j.rule : "") + (j.score != null ? " · " + Number(j.score).toFixed(2) : "");
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", cx + (x0 - cx) * 0.55); label.setAttribute("y", cy + (y0 - cy) * 0.55 - 4); label.setAttribute("text-anchor", "middle");
    label.setAttribute("class", "edge");
    label.textContent = how + (j.matched_on && j.matched_on.length ? " (" + j.matched_on.join(", ") + ")" : "");
    svg.appendChild(label);
    node(x0, y0, "#" + sp.source_profile + " " + sp.channel, sp.anchor ? sp.anchor.type + ": " + sp.anchor.value : "no identifier", "#c7d7fe");
  });
  node(cx, cy, x.customer_id.slice(0, 14) + "…", sps.length + " source profiles", "#2f5bd3");
  graph.appendChild(svg);
  const history = $("history"); clear(history);
  for (const h of x.history || []) {
    const link = h.link || {};
    history.appendChild(el("li", h.kind + " with " + h.other_customer_id + " · " + (link.method || "") +
      (link.rule ? " (" + link.rule + ")" : "") + " on " + (link.matched_on || []).join(", ") + " · " + (link.at || "")));
  }
}

function renderTimeline(t) {
  const table = $("timeline"); clear(table);
  row(table, ["when", "channel", "type", "details", "source profile"]);
  for (const e of t.events || []) {
    const details = [e.order_id && ("order " + e.order_id), e.total != null && (e.total + " " + (e.currency || "")),
      e.cart_id && ("cart " + e.cart_id), e.skus && e.skus.length && e.skus.join(", ")].filter(Boolean).join(" · ");
    row(table, [e.occurred_at, e.channel, e.type, details, "#" + e.source_profile]);
  }
  if (!(t.events || []).length) row(table, ["no touchpoint kept", "", "", "", ""]);
}

async function search(event) {
  if (event) event.preventDefault();
  const kind = $("kind").value, q = $("q").value.trim();
  if (!q) return;
  // Nothing of the previous customer (or of the previous token's view) stays shown.
  $("result").hidden = true;
  for (const id of ["timeline", "graph", "history", "identifiers", "person"]) clear($(id));
  status("searching…");
  try {
    const path = kind === "customer_id" ? "/v1/customers/" + encodeURIComponent(q)
      : "/v1/customers?" + new URLSearchParams([[kind, q]]).toString();
    const record = await api(path);
    renderRecord(record);
    const base = "/v1/customers/" + encodeURIComponent(record.customer_id);
    renderTimeline(await api(base + "/events?limit=50"));
    renderGraph(await api(base + "/explain"));
    status("as of " + record.as_of);
  } catch (e) {
    $("result").hidden = true;
    status(e.message, true);
  }
}

async function split(event) {
  event.preventDefault();
  const id = $("customer-id").textContent;
  try {
    const answer = await api("/v1/customers/" + encodeURIComponent(id) + "/split", {
      method: "POST",
      body: JSON.stringify({ identifier: $("split-identifier").value.trim(), reason: $("split-reason").value.trim() || null }),
    });
    $("split-status").textContent = "sent as " + answer.command_id;
  } catch (e) {
    $("split-status").textContent = e.message;
  }
}

$("search-form").addEventListener("submit", search);
$("split-form").addEventListener("submit", split);
