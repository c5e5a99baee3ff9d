import { useEffect, useMemo, useRef, useState } from "react";
import { AREA, circleGeometry, distance, polygonGeometry, projection, route, shapeOf } from "./geo.js";
import { colorOf } from "./colors.js";

const TENANT = "demo";
const WIDTH = 1000;
/** Live query covering the whole map, so every object on it is drawn as it moves. */
const VIEW_QUERY = "map-view";
const EVENTS_KEPT = 100;
const FLASH_MS = 2500;
/** Least time between two location pushes while dragging. */
const DRAG_SEND_MS = 80;
/** The simulated walk: one lap of these stops ([lon, lat]), a step every SIM_STEP_MS. */
const SIM_STOPS = [[2.331, 48.849], [2.342, 48.862], [2.358, 48.8615], [2.36, 48.8495]];
const SIM_STEP_M = 40;
const SIM_STEP_MS = 250;
const SEINE = [[2.325, 48.8615], [2.333, 48.859], [2.341, 48.8576], [2.347, 48.8565], [2.352, 48.8545], [2.357, 48.8515], [2.365, 48.8478]];
const LANDMARKS = [
  ["Louvre", [2.3376, 48.8606]],
  ["Notre-Dame", [2.3499, 48.853]],
  ["Hôtel de Ville", [2.3522, 48.8566]],
  ["Châtelet", [2.347, 48.8584]],
  ["Pont Neuf", [2.3413, 48.8575]],
];

const P = projection(AREA, WIDTH);
const CENTER = [(AREA.west + AREA.east) / 2, (AREA.south + AREA.north) / 2];
const VIEW_RADIUS = Math.ceil(distance(CENTER, [AREA.east, AREA.north]) + 100);

/** A fence id from a name: what the user typed, or `kind-N` when empty. */
function fenceId(name, kind, taken) {
  const base = name.trim().slice(0, 100) || kind;
  if (name.trim() && !taken.has(base)) return base;
  for (let n = 1; ; n++) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}

export function GeoMap({ connection }) {
  const me = `${connection.user}/car`;
  const geoRef = useRef(null);
  const [fences, setFences] = useState([]);
  const [objects, setObjects] = useState(() => new Map());
  const [myPos, setMyPos] = useState(null);
  const [events, setEvents] = useState([]);
  const [flash, setFlash] = useState({});
  const [inside, setInside] = useState(() => new Set());
  const [tool, setTool] = useState("move");
  const [draft, setDraft] = useState(null);
  const [name, setName] = useState("");
  const [dwell, setDwell] = useState(5);
  const [simulating, setSimulating] = useState(false);
  const [error, setError] = useState("");
  const send = useRef({ timer: null, pending: null, last: 0 });
  const fencesRef = useRef(fences);
  fencesRef.current = fences;

  useEffect(() => {
    const geo = connection.client.geo(TENANT, { fences: "*" });
    geoRef.current = geo;
    let alive = true;
    let reloading = false;
    const fail = (what) => (e) => alive && setError(`${what}: ${e.reason ?? e.message}`);

    async function loadFences() {
      const all = [];
      let after;
      // Bounded: 10 pages of 1,000 fences is more than this map can show.
      for (let page = 0; page < 10; page++) {
        const r = await geo.listFences({ after, limit: 1000 });
        all.push(...r.fences);
        if (!r.more || r.fences.length === 0) break;
        after = r.fences.at(-1).id;
      }
      if (alive) setFences(all);
    }
    async function watchObjects() {
      const r = await geo.query(VIEW_QUERY, { lat: CENTER[1], lon: CENTER[0], radius: VIEW_RADIUS });
      if (alive) setObjects(new Map(r.objects.map((o) => [o.id, [o.lon, o.lat]])));
    }
    const refresh = () => Promise.all([loadFences(), watchObjects()]).catch(fail("Cannot load the map"));

    const offEvent = geo.onEvent((e) => {
      setEvents((list) => [{ ...e, key: `${e.ts}-${e.fence}-${e.object}-${e.event}-${list.length}` }, ...list].slice(0, EVENTS_KEPT));
      const pair = `${e.fence}\u0000${e.object}`;
      if (e.event === "enter" || e.event === "dwell") setInside((s) => new Set(s).add(pair));
      if (e.event === "exit") {
        setInside((s) => {
          const next = new Set(s);
          next.delete(pair);
          return next;
        });
      }
      setFlash((f) => ({ ...f, [e.fence]: { event: e.event, until: Date.now() + FLASH_MS } }));
      setTimeout(() => alive && setFlash((f) => Object.fromEntries(Object.entries(f).filter(([, v]) => v.until > Date.now()))), FLASH_MS + 50);
      // A fence someone else created: fetch the list once to draw it.
      if (!fencesRef.current.some((f) => f.id === e.fence) && !reloading) {
        reloading = true;
        loadFences()
          .catch(fail("Cannot load fences"))
          .finally(() => {
            reloading = false;
          });
      }
    });
    const offQuery = geo.onQuery((kind, o) =>
      setObjects((m) => {
        const next = new Map(m);
        if (kind === "exited") next.delete(o.id);
        else next.set(o.id, [o.lon, o.lat]);
        return next;
      }),
    );
    // Live queries end with the connection: ask again after every reconnect.
    let wasDown = false;
    const offState = connection.client.onState((s) => {
      if (s === "reconnecting") wasDown = true;
      if (s === "connected" && wasDown) {
        wasDown = false;
        refresh();
      }
    });
    geo.join().then(refresh, fail("Cannot join the map"));
    const sending = send.current;
    return () => {
      alive = false;
      clearTimeout(sending.timer);
      offEvent();
      offQuery();
      offState();
      geo.leave();
    };
  }, [connection]);

  const positions = useMemo(() => {
    const m = new Map(objects);
    if (myPos) m.set(me, myPos);
    return m;
  }, [objects, myPos, me]);

  // The simulated walk: one lap, a step at a time, then it stops by itself.
  useEffect(() => {
    if (!simulating) return;
    const points = route(SIM_STOPS, SIM_STEP_M);
    let i = 0;
    const timer = setInterval(() => {
      if (i >= points.length) {
        setSimulating(false);
        return;
      }
      moveMe(points[i++], true);
    }, SIM_STEP_MS);
    return () => clearInterval(timer);
    // moveMe reads only refs and stable setters, so the walk need not restart when it changes.
  }, [simulating]);

  function pushLocation(pos) {
    geoRef.current?.location({ id: me, lon: pos[0], lat: pos[1] }).catch((e) => setError(`Position not sent: ${e.reason ?? e.message}`));
  }

  /** Move my object; while dragging, pushes are spaced by DRAG_SEND_MS and the last one always goes. */
  function moveMe(pos, now = false) {
    setMyPos(pos);
    const s = send.current;
    s.pending = pos;
    const wait = DRAG_SEND_MS - (Date.now() - s.last);
    if (now || wait <= 0) {
      clearTimeout(s.timer);
      s.timer = null;
      s.last = Date.now();
      s.pending = null;
      pushLocation(pos);
    } else if (!s.timer) {
      s.timer = setTimeout(() => {
        s.timer = null;
        if (s.pending) moveMe(s.pending, true);
      }, wait);
    }
  }

  async function createFence(kind, geometry) {
    const taken = new Set(fences.map((f) => f.id));
    const id = fenceId(name, kind, taken);
    const fence = { id, name: name.trim() || id, geometry, ...(dwell > 0 ? { dwell: Number(dwell) } : {}) };
    try {
      const stored = await geoRef.current.createFence(fence);
      setFences((list) => [...list.filter((f) => f.id !== stored.id), stored]);
      setName("");
      setError("");
    } catch (e) {
      setError(`Fence not created: ${e.reason ?? e.message}`);
    }
  }

  async function deleteFence(id) {
    try {
      await geoRef.current.deleteFence(id);
      setFences((list) => list.filter((f) => f.id !== id));
    } catch (e) {
      setError(`Fence not deleted: ${e.reason ?? e.message}`);
    }
  }

  function chooseTool(t) {
    setTool(t);
    setDraft(null);
  }

  function finishPolygon(corners) {
    setDraft(null);
    createFence("area", polygonGeometry(corners));
  }

  // Pointer input on the map, in [lon, lat].
  const svgRef = useRef(null);
  const dragging = useRef(false);
  function lonLatOf(e) {
    const svg = svgRef.current;
    const pt = svg.createSVGPoint();
    pt.x = e.clientX;
    pt.y = e.clientY;
    const { x, y } = pt.matrixTransform(svg.getScreenCTM().inverse());
    return P.toLonLat([Math.min(Math.max(x, 0), P.width), Math.min(Math.max(y, 0), P.height)]);
  }
  function onPointerDown(e) {
    if (e.button !== 0) return;
    const pos = lonLatOf(e);
    if (tool === "move") {
      setSimulating(false);
      dragging.current = true;
      svgRef.current.setPointerCapture(e.pointerId);
      moveMe(pos);
    } else if (tool === "circle") {
      svgRef.current.setPointerCapture(e.pointerId);
      setDraft({ center: pos, radius: 0 });
    } else if (tool === "polygon") {
      const corners = draft?.corners ?? [];
      const closes = corners.length >= 3 && distance(corners[0], pos) < 12 * P.metresPerUnit;
      if (closes) finishPolygon(corners);
      else setDraft({ corners: [...corners, pos] });
    }
  }
  function onPointerMove(e) {
    if (tool === "move" && dragging.current) moveMe(lonLatOf(e));
    else if (tool === "circle" && draft?.center) setDraft({ center: draft.center, radius: distance(draft.center, lonLatOf(e)) });
  }
  function onPointerUp() {
    if (tool === "move") dragging.current = false;
    if (tool === "circle" && draft?.center) {
      if (draft.radius >= 15) createFence("circle", circleGeometry(draft.center, draft.radius));
      else setError("Drag from the centre outwards to give the circle a radius.");
      setDraft(null);
    }
  }

  const now = Date.now();
  const occupied = new Set([...inside].map((pair) => pair.split("\u0000")[0]));

  return (
    <div className="geo">
      <div className="geo-main">
        <div className="toolbar" role="toolbar">
          {[
            ["move", "Move my car"],
            ["circle", "Draw circle"],
            ["polygon", "Draw polygon"],
          ].map(([t, label]) => (
            <button key={t} className={tool === t ? "tool active" : "tool"} onClick={() => chooseTool(t)}>
              {label}
            </button>
          ))}
          <label>
            Fence name
            <input value={name} maxLength={100} placeholder="auto" onChange={(e) => setName(e.target.value)} />
          </label>
          <label>
            Dwell (s)
            <input type="number" min={0} max={3600} value={dwell} onChange={(e) => setDwell(Math.max(0, Math.min(3600, Number(e.target.value) || 0)))} />
          </label>
          {tool === "polygon" && draft?.corners?.length >= 3 && <button onClick={() => finishPolygon(draft.corners)}>Finish polygon</button>}
          {draft && <button onClick={() => setDraft(null)}>Cancel</button>}
          <button className={simulating ? "tool active" : "tool"} onClick={() => setSimulating((s) => !s)}>
            {simulating ? "Stop walk" : "Simulate a walk"}
          </button>
        </div>
        <p className="help">{HELP[tool]}</p>
        <svg
          ref={svgRef}
          className={`map tool-${tool}`}
          data-testid="geo-map"
          viewBox={`0 0 ${P.width} ${P.height.toFixed(1)}`}
          onPointerDown={onPointerDown}
          onPointerMove={onPointerMove}
          onPointerUp={onPointerUp}
          onPointerCancel={onPointerUp}
        >
          <Basemap />
          {fences.map((f) => {
            const shape = shapeOf(f, positions);
            if (!shape) return null;
            const fl = flash[f.id];
            const cls = `fence${occupied.has(f.id) ? " occupied" : ""}${fl && fl.until > now ? ` flash flash-${fl.event}` : ""}`;
            return <FenceShape key={f.id} fence={f} shape={shape} className={cls} />;
          })}
          {draft?.center && <circle className="draft" cx={P.toXY(draft.center)[0]} cy={P.toXY(draft.center)[1]} r={draft.radius / P.metresPerUnit} />}
          {draft?.corners && <polyline className="draft" points={draft.corners.map((c) => P.toXY(c).join(",")).join(" ")} />}
          {draft?.corners?.map((c, i) => (
            <circle key={i} className="corner" cx={P.toXY(c)[0]} cy={P.toXY(c)[1]} r={i === 0 ? 7 : 4} />
          ))}
          {[...positions].map(([id, pos]) => (
            <MapObject key={id} id={id} pos={pos} mine={id === me} />
          ))}
        </svg>
        {error && (
          <p className="error" role="alert">
            {error} <button className="link" onClick={() => setError("")}>dismiss</button>
          </p>
        )}
      </div>
      <aside className="geo-side">
        <h2>Events</h2>
        <ol className="events" data-testid="geo-events">
          {events.length === 0 && <li className="empty">Move an object into a fence to see enter, exit and dwell events.</li>}
          {events.map((e) => (
            <li key={e.key} className={`event event-${e.event}`} data-event={e.event} data-fence={e.fence} data-object={e.object}>
              <time>{new Date(e.ts).toLocaleTimeString()}</time> <strong>{e.event}</strong> {e.object} · {fences.find((f) => f.id === e.fence)?.name ?? e.fence}
            </li>
          ))}
        </ol>
        <h2>Fences ({fences.length})</h2>
        <ul className="fence-list">
          {fences.map((f) => (
            <li key={f.id} className={occupied.has(f.id) ? "occupied" : ""}>
              <span>{f.name ?? f.id}</span>
              {f.dwell ? <small> dwell {f.dwell}s</small> : null}
              <button className="link" aria-label={`Delete ${f.id}`} onClick={() => deleteFence(f.id)}>
                delete
              </button>
            </li>
          ))}
        </ul>
      </aside>
    </div>
  );
}

const HELP = {
  move: "Click or drag on the map to move your car; fences light up as it enters and leaves them.",
  circle: "Press at the centre and drag outwards to draw a circular fence.",
  polygon: "Click the corners; click the first corner again (or Finish) to close the fence.",
};

function FenceShape({ fence, shape, className }) {
  const label = fence.name ?? fence.id;
  if (shape.kind === "circle") {
    const [x, y] = P.toXY(shape.center);
    return (
      <g className={className} data-fence={fence.id}>
        <circle cx={x} cy={y} r={shape.radius / P.metresPerUnit} />
        <text x={x} y={y} textAnchor="middle" dominantBaseline="middle">{label}</text>
      </g>
    );
  }
  const rings = shape.rings.map((ring) => ring.map((c) => P.toXY(c)));
  const [lx, ly] = rings[0].reduce(([sx, sy], [x, y]) => [sx + x / rings[0].length, sy + y / rings[0].length], [0, 0]);
  return (
    <g className={className} data-fence={fence.id}>
      {rings.map((r, i) => (
        <polygon key={i} points={r.map((p) => p.join(",")).join(" ")} />
      ))}
      <text x={lx} y={ly} textAnchor="middle" dominantBaseline="middle">{label}</text>
    </g>
  );
}

function MapObject({ id, pos, mine }) {
  const [x, y] = P.toXY(pos);
  const owner = id.split("/")[0];
  return (
    <g className={mine ? "object mine" : "object"} data-object={id} transform={`translate(${x.toFixed(1)},${y.toFixed(1)})`}>
      <circle r={mine ? 9 : 7} fill={colorOf(owner)} />
      <text y={-13} textAnchor="middle">{id}</text>
    </g>
  );
}

/** The offline background: a 250 m grid, the river, a few landmarks, a scale bar. */
function Basemap() {
  const lines = useMemo(() => {
    const step = 250 / P.metresPerUnit;
    const out = [];
    for (let x = step, i = 1; x < P.width; x += step, i++) out.push(<line key={`x${i}`} className={i % 2 ? "grid" : "grid major"} x1={x} y1={0} x2={x} y2={P.height} />);
    for (let y = step, i = 1; y < P.height; y += step, i++) out.push(<line key={`y${i}`} className={i % 2 ? "grid" : "grid major"} x1={0} y1={y} x2={P.width} y2={y} />);
    return out;
  }, []);
  const bar = 500 / P.metresPerUnit;
  return (
    <g className="basemap" pointerEvents="none">
      <rect width={P.width} height={P.height} className="land" />
      {lines}
      <polyline className="river" points={SEINE.map((c) => P.toXY(c).join(",")).join(" ")} />
      {LANDMARKS.map(([label, c]) => {
        const [x, y] = P.toXY(c);
        return (
          <g key={label} className="landmark">
            <rect x={x - 3} y={y - 3} width={6} height={6} />
            <text x={x + 7} y={y + 4}>{label}</text>
          </g>
        );
      })}
      <g className="scale" transform={`translate(20,${(P.height - 20).toFixed(1)})`}>
        <line x1={0} y1={0} x2={bar} y2={0} />
        <text x={bar / 2} y={-6} textAnchor="middle">500 m</text>
      </g>
      <text className="north" x={P.width - 20} y={28} textAnchor="middle">N ↑</text>
    </g>
  );
}
