// The app's screens live at paths (/chat/<room>, /doc/<name>, /map): rusher answers every path without
// an extension with index.html, so a reload or a shared link opens the same screen.
import { useEffect, useState } from "react";

/** `{screen, id}` for a path: screen is "chat", "doc" or "map". */
export function parseRoute(pathname) {
  const [, screen, ...rest] = pathname.split("/");
  const id = decodeURIComponent(rest.join("/"));
  if (screen === "doc") return { screen, id: id || "notes" };
  if (screen === "map") return { screen, id: "" };
  return { screen: "chat", id: screen === "chat" && id ? id : "lobby" };
}

export function pathOf({ screen, id }) {
  return screen === "map" ? "/map" : `/${screen}/${encodeURIComponent(id)}`;
}

/** The current route and a function to go elsewhere (pushes a history entry). */
export function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.pathname));
  useEffect(() => {
    const onPop = () => setRoute(parseRoute(location.pathname));
    addEventListener("popstate", onPop);
    return () => removeEventListener("popstate", onPop);
  }, []);
  const go = (next) => {
    const path = pathOf(next);
    if (path !== location.pathname) history.pushState(null, "", path);
    setRoute(parseRoute(path));
  };
  return [route, go];
}
