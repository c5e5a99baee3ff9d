// Geometry for the offline map: a local equirectangular projection of a small area (metres are the
// same along x and y near its centre, so circles stay round), and the GeoJSON shapes of fences.

/** Mean Earth radius in metres (IUGG), as the server uses for circles. */
const EARTH_RADIUS = 6_371_008.8;
const RAD = Math.PI / 180;

/** The area the map shows: central Paris, about 2.9 km × 2.2 km. */
export const AREA = { south: 48.846, north: 48.866, west: 2.325, east: 2.365 };

/**
 * A projection of `area` onto a `width`-wide drawing: `toXY([lon, lat])`, `toLonLat([x, y])`,
 * `metresPerUnit` and the drawing's `height`.
 */
export function projection(area, width) {
  const lat0 = (area.south + area.north) / 2;
  const kx = Math.cos(lat0 * RAD);
  const spanX = (area.east - area.west) * kx;
  const scale = width / spanX; // drawing units per degree of latitude
  const height = (area.north - area.south) * scale;
  return {
    width,
    height,
    metresPerUnit: (EARTH_RADIUS * RAD) / scale,
    toXY: ([lon, lat]) => [(lon - area.west) * kx * scale, (area.north - lat) * scale],
    toLonLat: ([x, y]) => [area.west + x / (kx * scale), area.north - y / scale],
  };
}

/** Great-circle distance in metres between two [lon, lat] points (haversine). */
export function distance([lon1, lat1], [lon2, lat2]) {
  const dLat = (lat2 - lat1) * RAD;
  const dLon = (lon2 - lon1) * RAD;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** A circle fence geometry, coordinates rounded to about 1 cm. */
export function circleGeometry([lon, lat], radius) {
  return { type: "Point", coordinates: [round7(lon), round7(lat)], radius: Math.round(radius) };
}

/** A polygon fence geometry from its corners (the ring is closed here). */
export function polygonGeometry(corners) {
  const ring = corners.map(([lon, lat]) => [round7(lon), round7(lat)]);
  return { type: "Polygon", coordinates: [[...ring, ring[0]]] };
}

function round7(x) {
  return Math.round(x * 1e7) / 1e7;
}

/**
 * What to draw for a fence: `{kind: "circle", center, radius}` or `{kind: "polygons", rings}` (outer
 * rings only, [lon, lat] corners), or null for a shape the map does not draw.
 */
export function shapeOf(fence, positions) {
  const g = fence.geometry;
  if (g?.type === "Point" && typeof g.radius === "number") return { kind: "circle", center: g.coordinates, radius: g.radius };
  if (g?.type === "Polygon") return { kind: "polygons", rings: [g.coordinates[0]] };
  if (g?.type === "MultiPolygon") return { kind: "polygons", rings: g.coordinates.map((p) => p[0]) };
  if (fence.roam && positions.has(fence.roam.object)) {
    return { kind: "circle", center: positions.get(fence.roam.object), radius: fence.roam.radius };
  }
  return null;
}

/** Points along a closed route through `stops` ([lon, lat]), one every `step` metres. */
export function route(stops, step) {
  const out = [];
  for (let i = 0; i < stops.length; i++) {
    const a = stops[i];
    const b = stops[(i + 1) % stops.length];
    const n = Math.max(1, Math.round(distance(a, b) / step));
    for (let k = 0; k < n; k++) out.push([a[0] + ((b[0] - a[0]) * k) / n, a[1] + ((b[1] - a[1]) * k) / n]);
  }
  return out;
}
