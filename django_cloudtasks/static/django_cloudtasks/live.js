/* The live workflow page: polls the workflow's progress, redraws its timeline when the
 * counts move, and recolours the DAG picture's nodes. No reload, no dependency.
 *
 * The page holds <div id="ct-live" data-progress-url data-timeline-url data-poll-ms
 * data-colours data-finished>, the progress (#ct-live-progress) and the timeline box
 * (#ct-timeline). Polling stops once the workflow has finished.
 */
(function () {
  "use strict";

  var root = document.getElementById("ct-live");
  if (!root) {
    return;
  }
  var SVG = "http://www.w3.org/2000/svg";
  var colours = JSON.parse(root.dataset.colours || "{}");
  var pollMs = parseInt(root.dataset.pollMs, 10) || 2000;
  var box = document.getElementById("ct-timeline");
  var note = document.getElementById("ct-timeline-note");
  var state = {
    key: null,
    timeline: null,
    fetchedAt: 0,
    finished: root.dataset.finished === "true",
    polls: 0,
    draws: 0,
  };
  window.cloudtasksLive = state;

  function colour(name, part) {
    var pair = colours[name] || colours.PENDING || ["#f3f4f6", "#9ca3af"];
    return pair[part];
  }

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, attrs[key]);
    });
    if (parent) {
      parent.appendChild(node);
    }
    return node;
  }

  function seconds(value) {
    if (value === null || value === undefined) {
      return "-";
    }
    if (value < 60) {
      return value.toFixed(value < 10 ? 3 : 1) + " s";
    }
    if (value < 3600) {
      return (value / 60).toFixed(1) + " min";
    }
    return (value / 3600).toFixed(1) + " h";
  }

  function tick(t, step) {
    if (step >= 60) {
      return seconds(t);
    }
    var digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return t.toFixed(digits) + " s";
  }

  function niceStep(span, count) {
    var raw = span / Math.max(count, 1);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (raw <= steps[i] * power) {
        return steps[i] * power;
      }
    }
    return 10 * power;
  }

  function badge(name, label) {
    var span = document.createElement("span");
    span.className = "cloudtasks-state state-" + name;
    span.style.cssText =
      "background:" + colour(name, 0) + ";border:1px solid " + colour(name, 1) +
      ";border-radius:4px;padding:0 6px;color:#111827;white-space:nowrap";
    span.textContent = label || name;
    return span;
  }

  // -- progress ------------------------------------------------------------------------

  function showProgress(data) {
    var box = document.getElementById("ct-live-progress");
    if (!box) {
      return;
    }
    var bar = box.querySelector(".ct-progress-bar");
    var percent = data.total ? (100 * data.done) / data.total : 100;
    bar.setAttribute("aria-valuenow", data.done);
    bar.setAttribute("aria-valuemax", data.total);
    bar.querySelector("span").style.width = percent.toFixed(1) + "%";
    box.querySelector(".ct-progress-text").textContent =
      data.done + " / " + data.total + " nodes done";
    var counts = box.querySelector(".ct-counts");
    counts.replaceChildren();
    Object.keys(data.counts).forEach(function (name) {
      var n = data.counts[name];
      if (n || name === "SUCCESS") {
        var item = document.createElement("span");
        item.className = "ct-count";
        item.dataset.state = name;
        item.appendChild(badge(name, name + " " + n));
        counts.appendChild(item);
        counts.appendChild(document.createTextNode(" "));
      }
    });
    setField("finished", data.finished_text);
    setField("duration", data.duration_text);
    if (data.finished) {
      // nothing is left to revoke
      var revoke = document.querySelector('.object-tools form[action$="/revoke/"]');
      if (revoke && revoke.parentNode) {
        revoke.parentNode.remove();
      }
    }
    var status = document.querySelector(".field-status_badge .readonly");
    if (status) {
      var begun = data.done || data.running;
      var label = data.finished ? data.status : begun ? "RUNNING " + data.done + "/" + data.total : "PENDING";
      status.replaceChildren(badge(data.finished ? data.status : begun ? "STARTED" : "PENDING", label));
    }
  }

  function setField(name, text) {
    var field = document.querySelector(".field-" + name + " .readonly");
    if (field && text !== undefined && field.textContent !== text) {
      field.textContent = text;
    }
  }

  function nodeLink(node) {
    var link = document.createElement("a");
    link.href = root.dataset.nodeUrl.replace("00000000-0000-0000-0000-000000000000", node.id);
    link.textContent = "#" + node.i + " " + node.label;
    return link;
  }

  function showNodeFields(data) {
    var output = document.querySelector(".field-output_link .readonly");
    var last = data.nodes.filter(function (node) {
      return node.i === data.output;
    })[0];
    if (output && last) {
      output.replaceChildren(nodeLink(last), document.createTextNode(" "), badge(last.state));
    }
    var failed = data.nodes
      .filter(function (node) {
        return node.state === "FAILURE" && node.s !== null;
      })
      .sort(function (a, b) {
        return a.f - b.f || a.i - b.i;
      })[0];
    var failure = document.querySelector(".field-failure .readonly");
    if (failure && failed) {
      failure.replaceChildren(nodeLink(failed), document.createTextNode(": " + failed.err));
    }
  }

  // -- the timeline --------------------------------------------------------------------

  function tooltip(node) {
    var lines = ["#" + node.i + " " + node.label + ": " + node.state];
    if (node.q !== null) {
      lines.push("queued at +" + seconds(node.q));
    }
    if (node.s !== null) {
      lines.push("started at +" + seconds(node.s) + (node.q !== null && node.s >= node.q ? " (waited " + seconds(node.s - node.q) + ")" : ""));
    }
    if (node.f !== null) {
      lines.push("finished at +" + seconds(node.f) + (node.s !== null && node.f >= node.s ? " (ran " + seconds(node.f - node.s) + ")" : ""));
    }
    if (node.n) {
      lines.push(node.n + (node.n === 1 ? " attempt" : " attempts"));
    }
    node.tries.forEach(function (attempt, k) {
      if (node.tries.length > 1) {
        lines.push("  attempt: " + attempt[2] + " after " + seconds(attempt[1] - attempt[0]));
      }
    });
    if (node.err) {
      lines.push(node.err);
    }
    return lines.join("\n");
  }

  function draw() {
    var data = state.timeline;
    if (!data || !box) {
      return;
    }
    var nodes = data.nodes;
    var now = data.now;
    if (data.status === "PENDING") {
      now += (performance.now() - state.fetchedAt) / 1000;
    }
    var end = data.status === "PENDING" ? now : data.end;
    nodes.forEach(function (node) {
      end = Math.max(end, node.f || 0, node.s || 0);
    });
    var span = Math.max(end, 0.001);
    var width = Math.max(box.clientWidth - 16, 480);
    var count = nodes.length;
    // Up to 720 pixels of rows: from 18 pixels a row for a few nodes down to a fraction
    // of one for thousands, where the bars fill their rows and read as one waterfall.
    var row = count ? Math.max(0.25, Math.min(18, 720 / count)) : 18;
    var dense = row < 4;
    var band = function (share) {
      return dense ? [0, row] : [row * (1 - share) / 2, row * share];
    };
    var labelled = row >= 11;
    var left = labelled ? 220 : 84;
    var right = 16;
    var top = 26;
    var plot = width - left - right;
    var height = Math.ceil(top + count * row + 8);
    var x = function (t) {
      return left + (Math.min(Math.max(t, 0), span) / span) * plot;
    };
    var svg = el("svg", {
      class: "ct-timeline",
      width: width,
      height: height,
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-label": "Timeline of " + count + " nodes over " + seconds(span),
      "font-family": "system-ui, sans-serif",
      "font-size": "11",
    });
    // the time axis
    var step = niceStep(span, Math.max(2, Math.floor(plot / 110)));
    var axis = el("g", { class: "ct-axis", fill: "#4b5563" }, svg);
    for (var t = 0; t <= span + step / 1000; t += step) {
      el("line", { x1: x(t), x2: x(t), y1: top - 4, y2: height - 6, stroke: "#e5e7eb" }, axis);
      var label = el("text", { x: x(t), y: top - 9, "text-anchor": t === 0 ? "start" : "middle" }, axis);
      label.textContent = tick(t, step);
    }
    if (!labelled) {
      var gutter = el("text", { x: left - 6, y: top - 9, "text-anchor": "end" }, axis);
      gutter.textContent = count + " nodes";
    }
    var rows = el("g", { class: "ct-rows" }, svg);
    nodes.forEach(function (node, k) {
      var y = top + k * row;
      var g = el("g", { class: "ct-row state-" + node.state, "data-node": node.id, "data-index": node.i }, rows);
      el("title", {}, g).textContent = tooltip(node);
      if (labelled) {
        if (k % 2) {
          el("rect", { x: 0, y: y, width: width, height: row, fill: "#f9fafb" }, g);
        }
        var name = "#" + node.i + " " + node.label;
        var text = el("text", { x: left - 8, y: y + row * 0.72, "text-anchor": "end", fill: "#111827" }, g);
        text.textContent = name.length > 32 ? name.slice(0, 31) + "\u2026" : name;
      }
      var running = node.state === "STARTED";
      var waiting = !running && node.f === null;
      // queued: from ready until its run started (or until now while it waits)
      if (node.q !== null) {
        var until = waiting ? now : node.s !== null && node.s >= node.q ? node.s : node.q;
        if (until > node.q) {
          el("rect", {
            class: "ct-wait",
            x: x(node.q),
            y: y + band(0.3)[0],
            width: Math.max(x(until) - x(node.q), 1),
            height: band(0.3)[1],
            fill: colour("QUEUED", 1),
            opacity: "0.45",
          }, g);
        }
      }
      // earlier attempts, drawn thin under the last one
      node.tries.forEach(function (attempt) {
        if (attempt[0] === node.s && !waiting) {
          return;
        }
        el("rect", {
          class: "ct-try outcome-" + attempt[2],
          x: x(attempt[0]),
          y: y + band(0.5)[0],
          width: Math.max(x(attempt[1]) - x(attempt[0]), 1.5),
          height: band(0.5)[1],
          fill: colour(attempt[2] === "RETRY" ? "RETRY" : attempt[2], 1),
          opacity: "0.7",
        }, g);
      });
      // the last run: from its start to its end (or to now while it runs)
      if (node.s !== null && !waiting) {
        var stop = running ? now : node.f;
        el("rect", {
          class: "ct-bar state-" + node.state,
          x: x(node.s),
          y: y + band(0.7)[0],
          width: Math.max(x(stop) - x(node.s), 2),
          height: band(0.7)[1],
          fill: colour(node.state, 0),
          stroke: row >= 6 ? colour(node.state, 1) : "none",
          "stroke-width": "1",
          rx: row >= 6 ? 2 : 0,
        }, g);
      } else if (node.f !== null) {
        // finished without a run of its own: a group join, or failed or revoked upstream
        el("rect", {
          class: "ct-mark state-" + node.state,
          x: x(node.f) - 1.5,
          y: y + band(0.8)[0],
          width: 3,
          height: band(0.8)[1],
          fill: colour(node.state, 1),
        }, g);
      }
    });
    box.replaceChildren(svg);
    state.draws += 1;
    if (note) {
      note.textContent =
        data.shown < data.size
          ? "The timeline shows the first " + data.shown + " of " + data.size + " nodes."
          : "";
    }
  }

  function recolourPicture(nodes) {
    var picture = document.getElementById("workflow-graph");
    if (!picture) {
      return;
    }
    nodes.forEach(function (node) {
      var shape = picture.querySelector('g.node[data-node="' + node.id + '"]');
      if (!shape || shape.classList.contains("state-" + node.state)) {
        return;
      }
      Array.prototype.slice.call(shape.classList).forEach(function (name) {
        if (name.indexOf("state-") === 0) {
          shape.classList.remove(name);
        }
      });
      shape.classList.add("state-" + node.state);
      var body = shape.querySelector("rect, polygon, ellipse, circle, path");
      if (body) {
        body.setAttribute("fill", colour(node.state, 0));
        body.setAttribute("stroke", colour(node.state, 1));
      }
    });
  }

  // -- polling -------------------------------------------------------------------------

  function getJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (response) {
        if (!response.ok) {
          throw new Error(url + " answered " + response.status);
        }
        return response.json();
      }
    );
  }

  function loadTimeline() {
    return getJson(root.dataset.timelineUrl).then(function (data) {
      state.timeline = data;
      state.fetchedAt = performance.now();
      draw();
      recolourPicture(data.nodes);
      showNodeFields(data);
    });
  }

  function poll() {
    getJson(root.dataset.progressUrl)
      .then(function (data) {
        state.polls += 1;
        showProgress(data);
        state.finished = data.finished;
        var key = JSON.stringify(data.counts) + data.status;
        if (key !== state.key) {
          state.key = key;
          return loadTimeline();
        }
        draw(); // the running bars grow with the clock
        return null;
      })
      .catch(function (error) {
        if (window.console) {
          window.console.warn("cloudtasks: " + error.message);
        }
      })
      .then(function () {
        if (!state.finished) {
          window.setTimeout(poll, pollMs);
        }
      });
  }

  loadTimeline()
    .catch(function () {})
    .then(function () {
      if (!state.finished) {
        window.setTimeout(poll, pollMs);
      }
    });
  window.addEventListener("resize", draw);
})();
