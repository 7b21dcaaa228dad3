// The one Buffer call the browser bundles meet: jpeg-js's encoder returns Buffer.from(bytes)
// when it sees a CommonJS `module` (as inside esbuild's wrapper). A Uint8Array does the same job.
export const Buffer = { from: (bytes) => Uint8Array.from(bytes) };
