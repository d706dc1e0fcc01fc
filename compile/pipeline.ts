/**
 * The pass pipeline from a traced graph to what is lowered: CSE first (so equal constants and
 * repeated index arithmetic merge before patterns are matched), fusion rules, then — for a
 * training graph — reverse-mode autodiff on the fused graph, and CSE + DCE over the result.
 */
import type { Graph } from './ir.ts';
import { differentiate } from './autodiff.ts';
import { cse, dce } from './passes.ts';
import { fuse, INFERENCE_PHASES, type FusionReport, type Rule } from './fusion.ts';

export interface Compiled extends FusionReport {
  /** Node count of the traced graph, before any pass. */
  readonly traced: number;
}

/** The inference pipeline, with what fusion did; `phases` of rules for a graph another runtime lowers (ONNX). */
export function optimizeReport(g: Graph, phases: readonly (readonly Rule[])[] = INFERENCE_PHASES): Compiled {
  let graph = cse(g);
  const applied: Record<string, number> = {};
  for (const rules of phases) {
    const fused = fuse(graph, rules);
    graph = fused.graph;
    for (const [name, n] of Object.entries(fused.applied)) applied[name] = (applied[name] ?? 0) + n;
  }
  return { graph: dce(cse(graph)), applied, traced: g.nodes.length };
}

export function optimize(g: Graph, phases: readonly (readonly Rule[])[] = INFERENCE_PHASES): Graph {
  return optimizeReport(g, phases).graph;
}

/** The training pipeline: fusion, gradients of `loss` for `wrt` (outputs `grad:NAME`), clean-up. */
export function trainingReport(g: Graph, loss: string, wrt: readonly string[]): Compiled {
  const fused = fuse(cse(g));
  return { graph: dce(cse(differentiate(fused.graph, loss, wrt))), applied: fused.applied, traced: g.nodes.length };
}
