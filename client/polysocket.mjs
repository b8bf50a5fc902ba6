// The ES module entry: the ES3 file is CommonJS where it finds `module`, so
// both entries share one constructor (and one window.PolySocket).
import PolySocket from "./polysocket.js";

export default PolySocket;
export { PolySocket };
