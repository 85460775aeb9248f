// The page's query parameters (the browser tests set them; web/README.md lists them).

export const query = new URLSearchParams(location.search);

/** ?name=V parsed by parse, or dflt without it. */
export const numParam = (name, dflt, parse) => (query.has(name) ? parse(query.get(name)) : dflt);

/** ?name=N as an integer, or dflt without it (or when it is not a non-zero number). */
export const intParam = (name, dflt) => (query.has(name) ? parseInt(query.get(name), 10) || dflt : dflt);

/** ?name=K: a fixed number of steps per step() call (at least 1); 0 (adaptive) without it. */
export const chunkParam = (name) => (query.has(name) ? Math.max(1, parseInt(query.get(name), 10) || 1) : 0);
