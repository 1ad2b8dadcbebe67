// voicedrop's dashboard: polls /api/dashboard (If-None-Match: unchanged costs a 304) while
// the page is visible, and draws it. User text is only ever inserted as text nodes.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const KINDS = ["load", "prefetch", "promote", "demote", "evict", "drop"];
  let token = sessionStorage.getItem("voicedrop-token") || "";
  let etag = null;
  let data = null;
  let timer = null;
  const jobItems = new Map(); // job id -> [signature, li]: players survive redraws

  const headers = (extra = {}) => (token ? { ...extra, Authorization: `Bearer ${token}` } : extra);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child)); // strings become text
    }
    return node;
  }

  function svg(tag, attrs = {}, title = null) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (title !== null) {
      const t = document.createElementNS(SVG, "title");
      t.textContent = title;
      node.append(t);
    }
    return node;
  }

  const gb = (bytes) => `${(bytes / 2 ** 30).toFixed(2)} GB`;
  const onGpu = (device) => (device || "").startsWith("cuda");
  const onDevice = (device) => (onGpu(device) ? `on the GPU (${device})` : "on the CPU, no GPU");
  const POLICY = {
    low: "models leave the GPU after use (LOW_VRAM)",
    normal: "models stay loaded",
    budget: "models kept within a memory budget",
  };
  // the original /vram keys, as people say them (the API keeps the keys)
  const FIGURES = {
    allocated_gb: "held by models, GB", reserved_gb: "reserved by PyTorch, GB",
    free_gb: "free on the GPU, GB", total_gb: "the GPU's memory, GB",
    cached_models: "models on the GPU", low_vram_mode: "LOW_VRAM",
  };
  const TIER = { device: "in use", host: "kept in RAM", disk: "on disk" };
  const clock = (unix) => new Date(unix * 1000).toLocaleTimeString();
  const fileUrl = (id, name) => `/jobs/${encodeURIComponent(id)}/files/${encodeURIComponent(name)}`;

  // ---- polling ------------------------------------------------------------------------------

  async function poll() {
    clearTimeout(timer);
    if (document.hidden) return; // nobody looking: no work for the daemon
    try {
      const response = await fetch("/api/dashboard", {
        headers: headers(etag ? { "If-None-Match": etag } : {}),
        cache: "no-store",
      });
      if (response.status === 401) {
        askToken();
        return;
      }
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        data = await response.json();
        render(data);
      }
      $("daemon").classList.remove("stale");
    } catch (err) {
      $("daemon").textContent = "cannot reach the daemon's HTTP API";
      $("daemon").classList.add("stale");
    }
    timer = setTimeout(poll, 1000);
  }

  function askToken() {
    $("token-form").hidden = false;
    $("daemon").textContent = "a token is needed";
    $("token").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("voicedrop-token", token);
    $("token-form").hidden = true;
    etag = null;
    poll();
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });

  // ---- drawing ------------------------------------------------------------------------------

  function render(d) {
    const daemon = d.daemon;
    $("daemon").textContent =
      `${daemon.state}` + (daemon.job_id ? `: ${daemon.job_id}` : "") +
      (daemon.stage ? ` (${daemon.stage})` : "") +
      (daemon.device ? ` · ${onDevice(daemon.device)}` : "") +
      (POLICY[daemon.policy] ? ` · ${POLICY[daemon.policy]}` : "");
    renderMemory(d);
    renderTimeline(d);
    renderQueue(d);
    renderJobs(d.recent);
    renderChoices(d.choices);
    renderVoicesList(d.voices || []);
  }

  function renderMemory(d) {
    const v = d.vram;
    const device = d.daemon.device || "";
    const gpu = onGpu(device);
    $("h-memory").textContent = gpu ? `GPU memory (${device})`
      : device ? "Models (no GPU: they run on the CPU, in this computer's memory)" : "Models";
    $("gauge").hidden = !gpu;
    $("vram").hidden = !gpu;
    const share = v.total_gb > 0 ? v.allocated_gb / v.total_gb : 0;
    $("gauge").firstElementChild.style.width = `${Math.min(100, share * 100).toFixed(1)}%`;
    $("gauge").setAttribute("aria-valuenow", share.toFixed(3));
    $("vram").replaceChildren(...Object.entries(FIGURES).flatMap(([k, label]) =>
      [el("dt", {}, label), el("dd", {}, typeof v[k] === "boolean" ? (v[k] ? "on" : "off") : String(v[k]))]));
    const rows = Object.entries(d.models).map(([key, m]) =>
      el("tr", {},
        el("td", {}, key), el("td", {}, TIER[m.tier] || m.tier),
        el("td", { class: "num" }, m.device_bytes + m.host_bytes ? gb(m.device_bytes + m.host_bytes) : "—"),
        el("td", { class: "num" }, m.loads), el("td", { class: "num" }, m.promotes)));
    $("models").tBodies[0].replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5 }, "no model loaded yet"))]));
    $("workers-box").hidden = !d.workers.length;
    $("workers").replaceChildren(...d.workers.map((w) => el("li", {}, w.kind === "process"
      ? `device worker process: ${w.state}` + (w.pid ? ` (pid ${w.pid}` +
          (w.exits_in_s != null ? `, exits in ${Math.round(w.exits_in_s)} s if idle` : "") + ")" : "") +
          ((w.models || []).length ? `: ${w.models.join(", ")}` : "")
      : `${w.actor || w.index} on ${w.node || "?"} (GPU ${w.gpu || "-"}, ${w.policy || "?"}): ${w.state}` +
        (w.job_id ? ` ${w.job_id}` : ""))));
  }

  function renderTimeline(d) {
    const t = d.timeline;
    const W = 800, H = 220, left = 46, right = 8, top = 10, bottom = 22;
    const events = t.events.filter((e) => e.at >= t.now - t.window_s);
    // the last hour at most, zoomed to what happened in it (a minute at least)
    const span = Math.min(t.window_s, Math.max(60, events.length ? (t.now - events[0].at) * 1.05 : 60));
    const start = t.now - span;
    const gpu = onGpu(d.daemon.device);
    const peak = Math.max(1, ...events.map((e) => e.allocated || 0));
    const ymax = peak * 1.15;
    const x = (at) => left + ((at - start) / span) * (W - left - right);
    // no GPU: no device memory to draw, the moves on one line
    const y = (b) => (gpu ? H - bottom - (b / ymax) * (H - top - bottom) : (H - bottom + top) / 2);
    const nodes = [
      svg("line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }),
      svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: H - bottom }),
      svg("text", { x: 2, y: top + 8 }, null),
      svg("text", { x: 2, y: H - bottom }, null),
      svg("text", { x: left, y: H - 6 }, null),
      svg("text", { x: W - right - 40, y: H - 6 }, null),
    ];
    nodes[2].textContent = gpu ? gb(ymax) : "";
    nodes[3].textContent = gpu ? "0" : "";
    nodes[4].textContent = clock(start);
    nodes[5].textContent = "now";
    if (events.length && gpu) {
      let path = `M ${x(start)} ${y(0)}`;
      let level = 0;
      for (const e of events) {
        const next = e.allocated ?? level;
        path += ` H ${x(e.at).toFixed(1)} V ${y(next).toFixed(1)}`;
        level = next;
      }
      path += ` H ${x(t.now)} V ${y(0)} Z`;
      nodes.push(svg("path", { class: "area", d: path }));
    }
    for (const e of events) {
      const kind = KINDS.includes(e.event) ? e.event : "load";
      nodes.push(svg("circle", {
        class: `mark k-${kind}`, cx: x(e.at).toFixed(1), cy: y(e.allocated ?? 0).toFixed(1), r: 4,
        "data-kind": kind, "data-job": e.job_id,
      }, `${clock(e.at)} ${e.event} ${e.key} ${gb(e.bytes)} in ${e.seconds.toFixed(3)} s` +
         ` (job ${e.job_id}${e.worker ? ` on ${e.worker}` : ""})`));
    }
    $("timeline").replaceChildren(...nodes);
    const last = events[events.length - 1];
    const minutes = Math.round(span / 60);
    $("timeline-caption").textContent =
      (gpu ? `GPU memory held by the models over the last ${minutes} min ` +
        `(of ${d.vram.total_gb} GB), after each of ${events.length} model moves`
        : `Model moves over the last ${minutes} min: ${events.length}`) +
      (last ? `; latest: ${last.event} ${last.key} at ${clock(last.at)}.` : ".") +
      " Hover a mark for the model and seconds.";
  }

  function renderQueue(d) {
    const c = d.counts;
    $("counts").textContent = Object.entries(c).map(([k, v]) => `${k} ${v}`).join(" · ");
    $("running").replaceChildren(...(d.running.length
      ? d.running.map((id) => el("li", { "data-job": id }, id,
          id === d.daemon.job_id && d.daemon.stage ? ` — ${d.daemon.stage}` : ""))
      : [el("li", { class: "meta" }, "nothing")]));
    $("waiting").replaceChildren(...(d.waiting.length
      ? d.waiting.map((w) => el("li", { "data-job": w.job_id },
          el("strong", {}, w.job_id), " ",
          el("span", { class: "meta" }, [w.engine, w.voice, w.convert].filter(Boolean).join(" · ")),
          w.text ? el("div", { class: "text" }, w.text) : null,
          w.problem ? el("div", { class: "error" }, w.problem) : null,
          w.affinity ? el("div", { class: "meta" },
            "its models are loaded: it may run before older jobs (affinity, bounded)") : null,
          action("cancel", () => cancel(w.job_id))))
      : [el("li", { class: "meta" }, "empty")]));
  }

  function renderJobs(recent) {
    const items = recent.map((job) => {
      const signature = JSON.stringify(job);
      const known = jobItems.get(job.job_id);
      if (known && known[0] === signature) return known[1];
      const li = jobItem(job);
      jobItems.set(job.job_id, [signature, li]);
      return li;
    });
    for (const id of [...jobItems.keys()]) {
      if (!recent.some((j) => j.job_id === id)) jobItems.delete(id);
    }
    $("jobs").replaceChildren(...(items.length ? items : [el("li", { class: "meta" }, "none yet")]));
  }

  function jobItem(job) {
    const li = el("li", { "data-job": job.job_id, "data-status": job.status },
      el("span", { class: `badge ${job.status}` }, job.status),
      el("strong", {}, job.job_id), " ",
      el("span", { class: "meta" }, [job.engine, job.voice, job.convert, job.worker]
        .filter(Boolean).join(" · ")));
    if (job.text) li.append(el("div", { class: "text" }, job.text));
    const stages = Object.entries(job.stages).map(([k, s]) => `${k} ${s.toFixed(2)} s`).join(", ");
    const seconds = (s) => (typeof s === "number" ? `${s.toFixed(2)} s` : "? s");
    li.append(el("div", { class: "meta" },
      seconds(job.total_s) + (stages ? ` (${stages})` : "") +
      (job.audio_s ? ` · ${job.audio_s.toFixed(2)} s of audio` : "") +
      ` · ${job.events} model moves` +
      (job.finished_at ? ` · ${new Date(job.finished_at).toLocaleTimeString()}` : "")));
    if (job.error) {
      li.append(el("div", { class: "error" },
        `${job.error.code}` + (job.error.field ? ` (${job.error.field})` : "") + `: ${job.error.message}`));
      li.append(action("retry", () => retry(job.job_id)));
    }
    for (const name of job.outputs) {
      const audio = el("audio", { controls: "", preload: "none", "aria-label": `${job.job_id}: ${name}` });
      if (token) {
        audio.addEventListener("play", () => authorisedSource(audio, job.job_id, name), { once: true });
      } else {
        audio.src = fileUrl(job.job_id, name);
      }
      li.append(el("div", { class: "meta" }, name), audio);
    }
    const button = el("button", { type: "button", class: "link" }, "report");
    button.addEventListener("click", () => showReport(li, job.job_id, button));
    li.append(button);
    return li;
  }

  async function authorisedSource(audio, id, name) {
    const response = await fetch(fileUrl(id, name), { headers: headers() });
    if (response.ok) {
      audio.src = URL.createObjectURL(await response.blob());
      audio.play();
    }
  }

  async function showReport(li, id, button) {
    const open = li.querySelector("pre.report");
    if (open) {
      open.remove();
      return;
    }
    const response = await fetch(`/jobs/${encodeURIComponent(id)}`, { headers: headers() });
    const body = await response.json();
    li.insertBefore(el("pre", { class: "report" }, JSON.stringify(body.report ?? body, null, 1)),
      button.nextSibling);
  }

  function action(label, run) {
    const button = el("button", { type: "button", class: "small" }, label);
    button.addEventListener("click", run);
    return button;
  }

  async function cancel(id) {
    followed = null;
    const response = await fetch(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE", headers: headers() });
    const answer = await response.json().catch(() => ({}));
    $("submit-result").textContent = response.ok ? `${id} cancelled`
      : `${id} not cancelled: ${(answer.detail || [response.statusText]).join("; ")}`;
    etag = null;
    poll();
  }

  async function retry(id) {
    followed = null;
    const response = await fetch(`/jobs/${encodeURIComponent(id)}/retry`, { method: "POST", headers: headers() });
    const answer = await response.json().catch(() => ({}));
    $("submit-result").textContent = response.status === 202 ? `${id} again as ${answer.id}`
      : `${id} not retried: ${(answer.detail || [response.statusText]).join("; ")}`;
    if (response.status === 202) follow(answer.id);
    etag = null;
    poll();
  }

  function renderVoicesList(voices) {
    const byEngine = new Map();
    for (const v of voices) {
      if (!byEngine.has(v.engine)) byEngine.set(v.engine, new Map());
      const names = byEngine.get(v.engine);
      const target = v.voice || "(the engine's own)";
      names.set(target, [...(names.get(target) || []), v.id]);
    }
    $("voices").replaceChildren(...[...byEngine].map(([engine, names]) => el("li", {},
      el("strong", {}, engine), " ",
      ...[...names].map(([target, ids]) => el("div", { class: "meta" },
        `${target}: ${ids.join(", ")}`)))));
  }

  function renderChoices(choices) {
    const engine = $("f-engine");
    if (!engine.options.length) {
      engine.replaceChildren(...choices.engines.map((n) => el("option", { value: n }, n)));
      engine.addEventListener("change", () => renderVoices(data.choices));
      $("f-convert").addEventListener("change", () => {
        $("f-convert-more").hidden = !$("f-convert").value;
      });
      $("f-convert").append(...Object.entries(choices.models)
        .map(([n, e]) => el("option", { value: n, "data-engine": e }, `${n} (${e})`)));
    }
    renderVoices(choices);
  }

  function renderVoices(choices) {
    const engine = $("f-engine").value;
    const voice = $("f-voice");
    const keep = voice.value;
    const names = Object.entries(choices.voices).filter(([, e]) => e === engine).map(([n]) => n);
    const signature = names.join("\n");
    if (voice.dataset.names === signature) return;
    voice.dataset.names = signature;
    voice.replaceChildren(el("option", { value: "" }, "(engine default)"),
      ...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) voice.value = keep;
  }

  // ---- submitting ---------------------------------------------------------------------------

  async function submit(body, contentType) {
    const result = $("submit-result");
    result.textContent = "sending…";
    followed = null;
    delete result.dataset.job;
    const response = await fetch("/tts/synthesize", {
      method: "POST", body, headers: headers(contentType ? { "Content-Type": contentType } : {}),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 202) {
      result.textContent = `queued as ${answer.id}`;
      etag = null;
      poll();
      follow(answer.id);
    } else {
      const detail = Array.isArray(answer.detail) ? answer.detail.join("; ") : response.statusText;
      result.textContent = `refused (${response.status}): ${detail}`;
    }
  }

  // What was just submitted, followed to its end: its result plays where the user looks.
  let followed = null;
  async function follow(id) {
    followed = id;
    const result = $("submit-result");
    result.dataset.job = id;
    while (followed === id) {
      const response = await fetch(`/jobs/${encodeURIComponent(id)}`, { headers: headers() })
        .catch(() => null);
      const job = response && response.ok ? await response.json() : null;
      if (followed !== id) return; // the user moved on (another job, a cancel, a retry)
      if (job && (job.status === "done" || job.status === "duplicate")) {
        const outputs = (job.report && job.report.outputs) || [];
        const seconds = outputs.reduce((sum, o) => sum + (o.duration_s || 0), 0);
        const took = job.report && job.report.timings ? job.report.timings.total_s : null;
        result.replaceChildren(`${id}: done` + (took != null ? ` in ${took.toFixed(2)} s` : "") +
          ` · ${seconds.toFixed(2)} s of audio`);
        if (outputs.length) {
          const audio = el("audio", { controls: "", "aria-label": `${id}: ${outputs[0].file}` });
          result.append(audio);
          if (token) authorisedSource(audio, id, outputs[0].file);
          else {
            audio.src = fileUrl(id, outputs[0].file);
            audio.play().catch(() => {}); // a browser may want a click first: the controls are there
          }
        }
        return;
      }
      if (job && job.status === "failed") {
        const error = (job.report && job.report.error) || {};
        result.replaceChildren(el("span", { class: "error" },
          `${id} failed: ` + (error.code ? `${error.code}: ` : "") + (error.message || "")));
        return;
      }
      if (job && job.status === "running") {
        result.textContent = `${id}: running` + (job.stage ? ` (${job.stage})` : "") + "…";
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  $("job-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    for (const [k, v] of [...form.entries()]) {
      if ((typeof v === "string" && !v.trim()) || (v instanceof File && !v.size)) form.delete(k);
    }
    const convert = $("f-convert").selectedOptions[0];
    if (convert && convert.value) form.set("convert_engine", convert.dataset.engine);
    else for (const k of ["method", "pitch", "convert_options"]) form.delete(k);
    submit(form, null);
  });

  const zone = $("dropzone");
  const picker = $("manifest-file");
  const sendManifest = async (file) => submit(await file.text(), "application/json");
  zone.addEventListener("click", () => picker.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      picker.click();
    }
  });
  picker.addEventListener("change", () => picker.files[0] && sendManifest(picker.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) sendManifest(file);
  });

  poll();
})();
