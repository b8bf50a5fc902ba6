// Types of the ES module entry: the same constructor as the CommonJS one
// (index.d.ts), as the default export and as `PolySocket`.
import PolySocket from "./index.js";

export default PolySocket;
export { PolySocket };
export type PolySocketOptions = PolySocket.PolySocketOptions;
export type PolySocketInstallOptions = PolySocket.PolySocketInstallOptions;
export type PolySocketBinaryType = PolySocket.PolySocketBinaryType;
export type PolySocketMessageEvent<T = any> = PolySocket.PolySocketMessageEvent<T>;
export type PolySocketEventMap = PolySocket.PolySocketEventMap;
