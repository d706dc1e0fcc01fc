import { createRequire } from 'node:module';
import { dirname } from 'node:path';

const require = createRequire(import.meta.url);

/** The folder an installed npm package lives in, or an error naming the package and version to install. */
export function packageDir(name: string, version: string): string {
  try {
    return dirname(require.resolve(`${name}/package.json`));
  } catch {
    throw new Error(`expected the npm package ${name}@${version} to be installed (run \`npm ci\`), but it cannot be found`);
  }
}
