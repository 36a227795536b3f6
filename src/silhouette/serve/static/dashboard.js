// The dashboard page: polls the service's /ui JSON and draws counts, history charts and obfuscated frames.
// Plain JS, no libraries (the service has no internet); every URL is relative so any mount prefix works.
"use strict";

(() => {
  const POLL_MS = 2000;
  const HISTORY_S = 600;
  const HISTORY_EVERY_MS = 4000; // history changes by one point a frame: no need to refetch it every poll
  const STALE_S = 30; // a camera unseen this long is shown as stale
  const BOX_COLOUR = "#00e676";
  const cards = new Map(); // camera id -> {el, count, seen, frames, frame, caption, chart, frameSeen, historyAt}

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) {
      // the session expired or was revoked: back to the form (the key never goes in a URL)
      window.location.assign("login");
      throw new Error("logged out");
    }
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text; // textContent only: camera ids and health values are data
    return e;
  }

  function newCard(id) {
    const root = el("article", "camera");
    root.dataset.camera = id;
    const head = el("header");
    head.append(el("h2", "name", id));
    const seen = el("span", "seen");
    head.append(seen);
    const now = el("div", "now");
    const count = el("span", "count", "–");
    now.append(count, el("span", "unit", "people now"));
    const frameFig = el("figure", "frame-fig");
    const frame = el("canvas", "frame");
    frame.width = 320;
    frame.height = 200;
    const caption = el("figcaption", "", "latest obfuscated frame: waiting…");
    frameFig.append(frame, caption);
    const chartFig = el("figure", "chart-fig");
    const chart = el("canvas", "chart");
    chartFig.append(chart, el("figcaption", "", `people counted, last ${HISTORY_S / 60} min`));
    const frames = el("footer", "frames");
    root.append(head, now, frameFig, chartFig, frames);
    return { el: root, count, seen, frames, frame, caption, chart, frameSeen: null, historyAt: 0 };
  }

  function ago(seconds) {
    if (seconds < 1.5) return "just now";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }

  async function drawFrame(card, id) {
    let data;
    try {
      data = await getJSON(`ui/frame/${encodeURIComponent(id)}`);
    } catch (e) {
      card.caption.textContent = "latest obfuscated frame: none kept";
      return;
    }
    const img = new Image();
    img.src = `data:${data.content_type};base64,${data.image}`;
    await img.decode();
    const c = card.frame;
    c.width = img.naturalWidth; // canvas pixels = frame pixels, so boxes need no rescaling
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    drawBoxes(ctx, data.boxes, c.width);
    c.dataset.boxes = String(data.boxes.length);
    const n = data.boxes.length;
    card.caption.textContent = `latest obfuscated frame · ${n} person box${n === 1 ? "" : "es"}`;
  }

  function drawBoxes(ctx, boxes, width) {
    ctx.strokeStyle = BOX_COLOUR;
    ctx.lineWidth = Math.max(2, Math.round(width / 240));
    ctx.font = `${Math.max(10, Math.round(width / 32))}px sans-serif`;
    ctx.fillStyle = BOX_COLOUR;
    for (const b of boxes) {
      const [x1, y1, x2, y2, score] = b;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      if (score !== undefined) ctx.fillText(score.toFixed(2), x1, Math.max(10, y1 - 3));
    }
  }

  function yScale(maxCount) {
    // whole-number gridlines (counts are people): at most 5 steps of 1, 2, 5, 10, 20, 50... up to a top above the max
    for (let step = 1; ; step *= 10) {
      for (const m of [1, 2, 5]) {
        const n = Math.ceil(maxCount / (m * step));
        if (n <= 5) return { top: Math.max(1, n) * m * step, step: m * step };
      }
    }
  }

  function drawChart(canvas, points, now) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 320;
    const h = canvas.clientHeight || 120;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 30, r: 8, t: 8, b: 18 };
    const t0 = now - HISTORY_S;
    const { top, step } = yScale(Math.max(0, ...points.map((p) => p[1])));
    const x = (t) => pad.l + ((t - t0) / HISTORY_S) * (w - pad.l - pad.r);
    const y = (c) => h - pad.b - (c / top) * (h - pad.t - pad.b);
    drawAxes(ctx, { w, h, pad, top, step, x, y, now });
    canvas.dataset.points = String(points.length);
    if (!points.length) {
      ctx.fillStyle = "#8a94a6";
      ctx.fillText("no counts in this window", pad.l + 8, h / 2);
      return;
    }
    // a step line: a count holds until the next frame is counted
    ctx.beginPath();
    ctx.moveTo(x(Math.max(points[0][0], t0)), y(points[0][1]));
    for (let i = 1; i < points.length; i++) {
      ctx.lineTo(x(points[i][0]), y(points[i - 1][1]));
      ctx.lineTo(x(points[i][0]), y(points[i][1]));
    }
    ctx.lineTo(x(now), y(points[points.length - 1][1]));
    ctx.strokeStyle = "#4fc3f7";
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.lineTo(x(now), y(0));
    ctx.lineTo(x(Math.max(points[0][0], t0)), y(0));
    ctx.closePath();
    ctx.fillStyle = "rgba(79, 195, 247, 0.15)";
    ctx.fill();
  }

  function drawAxes(ctx, { w, h, pad, top, step, x, y, now }) {
    ctx.font = "10px sans-serif";
    ctx.fillStyle = "#8a94a6";
    ctx.strokeStyle = "#2a3344";
    ctx.lineWidth = 1;
    for (let c = 0; c <= top; c += step) {
      ctx.beginPath();
      ctx.moveTo(pad.l, Math.round(y(c)) + 0.5);
      ctx.lineTo(w - pad.r, Math.round(y(c)) + 0.5);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(String(c), pad.l - 4, y(c) + 3);
    }
    ctx.textAlign = "center";
    for (const m of [10, 5, 0]) {
      const label = m === 0 ? "now" : `-${m} min`;
      ctx.fillText(label, Math.min(Math.max(x(now - m * 60), pad.l + 14), w - pad.r - 10), h - 5);
    }
    ctx.textAlign = "left";
  }

  async function drawHistory(card, id, now) {
    const data = await getJSON(`ui/history/${encodeURIComponent(id)}?seconds=${HISTORY_S}`);
    drawChart(card.chart, data.points, now);
    card.historyAt = Date.now();
  }

  async function renderCameras(data) {
    const box = document.getElementById("cameras");
    document.getElementById("empty").hidden = data.cameras.length > 0;
    const listed = new Set();
    const work = [];
    for (const cam of data.cameras) {
      listed.add(cam.id);
      let card = cards.get(cam.id);
      if (!card) {
        card = newCard(cam.id);
        cards.set(cam.id, card);
      }
      box.append(card.el); // keeps the server's order (by id); append moves an existing card
      const age = Math.max(0, data.now - cam.last_seen);
      card.count.textContent = cam.last_count === null ? "–" : String(cam.last_count); // null: all pruned
      card.seen.textContent = `seen ${ago(age)}`;
      card.el.classList.toggle("stale", age > STALE_S);
      card.frames.textContent = `${cam.frames} frame${cam.frames === 1 ? "" : "s"} counted`;
      const changed = cam.last_seen !== card.frameSeen;
      if (changed) {
        card.frameSeen = cam.last_seen;
        work.push(drawFrame(card, cam.id));
      }
      if (changed || Date.now() - card.historyAt > HISTORY_EVERY_MS) work.push(drawHistory(card, cam.id, data.now));
    }
    for (const [id, card] of cards) {
      if (!listed.has(id)) {
        card.el.remove();
        cards.delete(id);
      }
    }
    await Promise.all(work);
  }

  function renderHealth(health) {
    const body = document.querySelector("#health tbody");
    body.replaceChildren();
    for (const [k, v] of Object.entries(health)) {
      const row = el("tr");
      const value = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
      row.append(el("th", "", k.replaceAll("_", " ")), el("td", "", value));
      if (k === "status") row.classList.add(v === "ok" ? "ok" : "bad");
      body.append(row);
    }
  }

  function setStatus(text, ok) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.classList.toggle("ok", ok);
    s.classList.toggle("bad", !ok);
  }

  async function tick() {
    try {
      const [cams, health] = await Promise.all([getJSON("ui/cameras"), getJSON("ui/health")]);
      renderHealth(health);
      await renderCameras(cams);
      setStatus(`live · updated ${new Date().toLocaleTimeString()}`, true);
    } catch (e) {
      setStatus(`not updating: ${e.message}`, false);
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }

  tick();
})();
