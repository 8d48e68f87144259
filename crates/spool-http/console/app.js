// Spool's web console: a page over the HTTP API, nothing more. Credentials stay in this tab's
// memory (sessionStorage), and every call sends them as Basic authentication.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { auth: sessionStorage.getItem("spool.auth"), user: sessionStorage.getItem("spool.user"), timer: null };

function say(text, error) {
  const m = $("message");
  m.textContent = text || "";
  m.className = error ? "error" : "";
}

async function api(method, path, body) {
  const headers = { Authorization: "Basic " + state.auth, Accept: "application/json", "X-Requested-With": "XMLHttpRequest" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    logout("Your session ended: log in again.");
    throw new Error("not logged in");
  }
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    throw new Error((json && json.msg) || res.status + " " + res.statusText);
  }
  return json && "data" in json && "code" in json ? json.data : json;
}

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function login(event) {
  event.preventDefault();
  const user = $("user").value;
  state.auth = b64(user + ":" + $("password").value);
  try {
    const who = await api("GET", "/kylin/api/user/authentication");
    state.user = who.userDetails.username;
    sessionStorage.setItem("spool.auth", state.auth);
    sessionStorage.setItem("spool.user", state.user);
    $("password").value = "";
    await start();
  } catch (e) {
    state.auth = null;
    say("Login failed: " + e.message, true);
  }
}

function logout(text) {
  sessionStorage.removeItem("spool.auth");
  sessionStorage.removeItem("spool.user");
  state.auth = null;
  clearInterval(state.timer);
  $("app-view").hidden = true;
  $("who").hidden = true;
  $("login-view").hidden = false;
  say(text || "");
}

async function start() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = state.user;
  say("");
  const projects = await api("GET", "/kylin/api/projects");
  const select = $("project");
  select.replaceChildren(...projects.map((p) => new Option(p.name, p.name)));
  const preferred = projects.find((p) => p.name.toLowerCase() === "ssb");
  if (preferred) select.value = preferred.name;
  await showTables();
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => refresh().catch(() => {}), 1000);
}

async function showTables() {
  const project = $("project").value;
  const box = $("tables");
  box.replaceChildren();
  if (!project) return;
  const tables = await api("GET", "/kylin/api/tables_and_columns?project=" + encodeURIComponent(project));
  for (const t of tables) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = t.table_NAME + (t.table_TYPE === "VIEW" ? " (view)" : "");
    details.append(summary);
    const list = document.createElement("ul");
    for (const c of t.columns) {
      const item = document.createElement("li");
      item.textContent = c.column_NAME + " " + c.type_NAME;
      list.append(item);
    }
    details.append(list);
    box.append(details);
  }
  box.dataset.project = project;
}

async function submit(event) {
  event.preventDefault();
  const button = $("submit");
  button.disabled = true;
  try {
    const data = await api("POST", "/kylin/api/async_query", {
      sql: $("sql").value,
      project: $("project").value,
      format: $("format").value,
    });
    say("Submitted " + (data.queryID || data.query_id));
    await refresh();
  } catch (e) {
    say("Not submitted: " + e.message, true);
  } finally {
    button.disabled = false;
  }
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function action(label, className, handler) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", handler);
  return b;
}

async function refresh() {
  if (!state.auth) return;
  const project = $("project").value;
  const page = await api("GET", "/kylin/api/async_query?limit=20&project=" + encodeURIComponent(project));
  const rows = page.queries.map((q) => {
    const tr = document.createElement("tr");
    tr.dataset.id = q.queryID;
    tr.dataset.state = q.state;
    tr.append(
      cell(new Date(q.submitted_at).toLocaleString()),
      cell(q.state, "state state-" + q.state),
      cell(String(q.rows), "num"),
      cell(String(q.bytes), "num"),
    );
    const sql = cell(q.sql, "sql");
    sql.title = q.state === "FAILED" || q.state === "CANCELLED" ? q.info : q.sql;
    tr.append(sql);
    const actions = document.createElement("td");
    actions.className = "actions";
    if (q.state === "SUCCEEDED") {
      actions.append(action("Download", "download", () => download(q.queryID)));
    }
    if (q.state === "QUEUED" || q.state === "RUNNING") {
      actions.append(action("Stop", "secondary stop", () => act("DELETE", "/kylin/api/async_query/stop/" + q.queryID, "Stopped")));
    }
    actions.append(action("Delete", "danger delete", () => act("DELETE", "/kylin/api/async_query/" + q.queryID, "Deleted")));
    tr.append(actions);
    return tr;
  });
  $("queries").tBodies[0].replaceChildren(...rows);
}

async function act(method, path, done) {
  try {
    await api(method, path);
    say(done);
    await refresh();
  } catch (e) {
    say(e.message, true);
  }
}

function fileName(res, id) {
  const header = res.headers.get("Content-Disposition") || "";
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="([^"]+)"/i.exec(header);
  return plain ? plain[1] : id;
}

async function download(id) {
  try {
    const res = await fetch("/kylin/api/async_query/" + id + "/result", {
      headers: { Authorization: "Basic " + state.auth, "X-Requested-With": "XMLHttpRequest" },
    });
    if (!res.ok) throw new Error(res.status + " " + res.statusText);
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = fileName(res, id);
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    say("Downloaded " + a.download);
  } catch (e) {
    say("Download failed: " + e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout("Logged out."));
  $("submit-form").addEventListener("submit", submit);
  $("project").addEventListener("change", () => {
    showTables().catch((e) => say(e.message, true));
    refresh().catch(() => {});
  });
  if (state.auth) start().catch((e) => say(e.message, true));
});
