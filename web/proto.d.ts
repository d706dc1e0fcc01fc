/** What web/build.ts's esbuild makes of an imported `.proto` file: its text. */
declare module '*.proto' {
  const text: string;
  export default text;
}
