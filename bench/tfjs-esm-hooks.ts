// Node module hooks that let tfjs-core's unbundled ES modules load (see registerTfjsGradients in
// tfjs.ts): they are written for bundlers, with extensionless relative imports and no
// "type": "module", so under tfjs-core/dist only, a relative specifier gets its ".js" (or
// "/index.js") and a .js file other than the prebuilt bundles loads as an ES module.

import type Module from 'node:module';

const DIST = '/@tensorflow/tfjs-core/dist/';
const BUNDLE = /\/tf-core\.[\w.]+\.js$/;

export const resolve: Module.ResolveHook = async (specifier, context, next) => {
  if (context.parentURL?.includes(DIST) && specifier.startsWith('.') && !specifier.endsWith('.js')) {
    try {
      return await next(`${specifier}.js`, context);
    } catch {
      return next(`${specifier}/index.js`, context);
    }
  }
  return next(specifier, context);
};

export const load: Module.LoadHook = async (url, context, next) => {
  if (url.includes(DIST) && url.endsWith('.js') && !BUNDLE.test(url)) return next(url, { ...context, format: 'module' });
  return next(url, context);
};
