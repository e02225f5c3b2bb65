// The render output's public surface, for `harbormaster render` and for commands that embed it.
export { RENDER_WATCH_STATUSES, renderOnce, startRender, type RenderHandle, type RenderIo } from './render-loop.js';
export type { RunResult } from './renderer.js';
export { parseWithTokens, TEMPLATE_OPTIONS, templateFlags, type TemplateFlags, checkTemplateFiles, loadRenderFile, parseStatuses, parseDomain } from './template-spec.js';
export { DEFAULT_TIMEOUT_MS, DEFAULT_WAIT, type RenderConfig, type TemplateSpec, type VerifySpec, type WaitSpec } from './types.js';
