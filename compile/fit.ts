/**
 * Training any loss written with the DSL: the program is traced per input shape, differentiated
 * on the IR and lowered like the MDT step (compile/train.ts), and each step applies the
 * optimizer and the EMA to the parameters. The feature classifier of `mdt eval` trains here.
 */
import * as tf from '@tensorflow/tfjs';
import type { ParamDecls } from '../dsl/param.ts';
import { createEma, createOptimizer, type Optimizer, type OptimizerConfig } from './optim.ts';
import { jit, type Program } from './trace.ts';
import { trainingReport } from './pipeline.ts';
import { gradName } from './autodiff.ts';

/** Parameter tensors for training: trainable ones as (unnamed) variables, the rest copied. */
export function trainingParams(decls: ParamDecls, initial: ReadonlyMap<string, tf.Tensor>, who: string): { params: Map<string, tf.Tensor>; trainable: Map<string, tf.Variable> } {
  const params = new Map<string, tf.Tensor>();
  const trainable = new Map<string, tf.Variable>();
  for (const [path, spec] of Object.entries(decls)) {
    const v = initial.get(path);
    if (v === undefined) throw new Error(`${who}: no value for parameter ${path}`);
    if (spec.trainable) {
      // Unnamed variables: tfjs's variable names are global, two trainers must not collide.
      const variable = tf.variable(v.clone(), true);
      trainable.set(path, variable);
      params.set(path, variable);
    } else params.set(path, v.clone());
  }
  return { params, trainable };
}

/** Adds each `grad:PATH` output of `out` for `paths` into `grads` (consumed). */
export function accumulateGradients(out: Map<string, tf.Tensor>, paths: readonly string[], grads: Map<string, tf.Tensor>): void {
  for (const path of paths) {
    const g = out.get(gradName(path));
    if (g === undefined) continue;
    const prev = grads.get(path);
    if (prev === undefined) grads.set(path, g);
    else {
      grads.set(path, tf.add(prev, g));
      tf.dispose([prev, g]);
    }
  }
}

export interface Fitter {
  readonly optimizer: Optimizer;
  readonly params: ReadonlyMap<string, tf.Tensor>;
  /** EMA of the trainable parameters (the others as they are). */
  readonly ema: ReadonlyMap<string, tf.Tensor>;
  /** One update on `data` (consumed); resolves to the loss. */
  step(data: Map<string, tf.Tensor>): Promise<number>;
  dispose(): void;
}

/** `program` must return a scalar `loss`; its data inputs come from each step's map. */
export function compileFit(decls: ParamDecls, program: Program, initial: ReadonlyMap<string, tf.Tensor>, opts: { readonly optimizer: OptimizerConfig; readonly emaDecay: number }): Fitter {
  const { params, trainable } = trainingParams(decls, initial, 'compileFit');
  const wrt = [...trainable.keys()];
  const exe = jit(program, (g) => trainingReport(g, 'loss', wrt).graph);
  const optimizer = createOptimizer(opts.optimizer);
  const ema = createEma(trainable, opts.emaDecay);
  return {
    optimizer,
    params,
    ema: new Map([...params].map(([k, v]) => [k, ema.values.get(k) ?? v])),
    async step(data) {
      const out = exe(new Map([...params, ...data]));
      tf.dispose([...data.values()]);
      const grads = new Map<string, tf.Tensor>();
      accumulateGradients(out, wrt, grads);
      const loss = out.get('loss')!;
      for (const [k, t] of out) if (k !== 'loss' && !grads.has(k.slice(5))) t.dispose();
      tf.tidy(() => {
        optimizer.apply(trainable, grads);
        ema.update(trainable);
      });
      const v = (await loss.data())[0]!;
      loss.dispose();
      return v;
    },
    dispose() {
      exe.dispose();
      optimizer.dispose();
      ema.dispose();
      for (const v of params.values()) v.dispose();
    },
  };
}
