// Types of polysocket.js as CommonJS (`require("polysocket")`); ES modules
// get the same ones through polysocket.d.mts.
//
// PolySocket is typed as the WebSocket it stands in for (lib.dom's, member
// for member, the same event types), and only with what the file does: its
// addEventListener takes no options (it would ignore `once` and `capture`),
// send() no SharedArrayBuffer (it would be sent as the text of its name).
// Its events are plain objects with the fields code reads (type, target,
// data, code, reason, wasClean...), not DOM Event instances.

/// <reference lib="dom" />

declare class PolySocket {
    /**
     * Opens a socket to `url` (ws:// or wss://) through the polysocket
     * router given in `options`, or else in PolySocket.defaults (set by
     * PolySocket.install). Throws a SyntaxError for another scheme, a
     * fragment, an invalid or duplicate subprotocol, or no router and token.
     */
    constructor(url: string | URL, protocols?: string | string[], options?: PolySocket.PolySocketOptions);

    static readonly CONNECTING: 0;
    static readonly OPEN: 1;
    static readonly CLOSING: 2;
    static readonly CLOSED: 3;
    readonly CONNECTING: 0;
    readonly OPEN: 1;
    readonly CLOSING: 2;
    readonly CLOSED: 3;

    /** The options sockets are made with when given none: install()'s. */
    static defaults: Partial<PolySocket.PolySocketInstallOptions>;

    /**
     * Sets PolySocket.defaults and puts PolySocket in place of
     * window.WebSocket where the browser has none (or with `force`), and
     * PolySocket.Auto where it has one (unless `fallback: false`), so that
     * code written for WebSocket runs unchanged; returns window.WebSocket as
     * it is then.
     */
    static install(options: PolySocket.PolySocketInstallOptions): typeof WebSocket | typeof PolySocket;

    /**
     * Native first: the browser's own WebSocket, and the bridge in its place
     * when a proxy refuses, hangs or strips the upgrade (the failure is
     * remembered for an hour per page origin and target host). The same API
     * as WebSocket.
     */
    static Auto: {
        new (url: string | URL, protocols?: string | string[], options?: PolySocket.PolySocketOptions): WebSocket;
    };

    readonly url: string;
    /** A number, as lib.dom has it: a union of the constants would stay narrowed after a check. */
    readonly readyState: number;
    /** The subprotocol the upstream chose, "" until open. */
    readonly protocol: string;
    /** Always "": no extension crosses the bridge. */
    readonly extensions: string;
    /** Bytes passed to send() and not yet delivered to the daemon. */
    readonly bufferedAmount: number;
    /**
     * How binary messages arrive: "blob" where Blob exists (the default, as
     * natively), "arraybuffer", or "binarystring" (one character per byte,
     * the default where ArrayBuffer is missing).
     */
    binaryType: PolySocket.PolySocketBinaryType;

    onopen: ((this: PolySocket, ev: Event) => any) | null;
    onmessage: ((this: PolySocket, ev: PolySocket.PolySocketMessageEvent) => any) | null;
    onerror: ((this: PolySocket, ev: Event) => any) | null;
    onclose: ((this: PolySocket, ev: CloseEvent) => any) | null;

    addEventListener<K extends keyof PolySocket.PolySocketEventMap>(
        type: K,
        listener: (this: PolySocket, ev: PolySocket.PolySocketEventMap[K]) => any,
    ): void;
    addEventListener(type: string, listener: EventListenerOrEventListenerObject): void;
    removeEventListener<K extends keyof PolySocket.PolySocketEventMap>(
        type: K,
        listener: (this: PolySocket, ev: PolySocket.PolySocketEventMap[K]) => any,
    ): void;
    removeEventListener(type: string, listener: EventListenerOrEventListenerObject): void;
    /** Calls the event's listeners at once (the socket's own events come one per task). */
    dispatchEvent(event: Event): boolean;

    /**
     * Sends a text message (a string), or a binary one. Throws an
     * InvalidStateError while connecting; after close(), counts the data in
     * bufferedAmount and drops it, as the standard says.
     */
    send(data: string | ArrayBuffer | ArrayBufferView | Blob): void;
    /**
     * Sends a binary message given as a binary string (one character per
     * byte); a character above 255 throws a SyntaxError.
     */
    sendBinary(data: string): void;
    /**
     * Closes the socket: `code` 1000 or 3000-4999 (else an
     * InvalidAccessError), `reason` at most 123 UTF-8 bytes (else a
     * SyntaxError).
     */
    close(code?: number, reason?: string): void;
}

declare namespace PolySocket {
    /** Where and how sockets go: `new PolySocket(url, protocols, options)`. */
    export interface PolySocketOptions {
        /** The router's URL, e.g. "https://router.example.com" or "//router.example.com". */
        router: string;
        /** The token the router admits the page's sockets with. */
        token: string;
        /**
         * "jsonp": JSONP polls only. Left out, sockets stream where the
         * browser can (cross-origin XMLHttpRequest and JSON) and fall back to
         * JSONP where a stream does not get through.
         */
        transport?: "jsonp";
        /**
         * A credential for upstreams that authenticate the handshake, or a
         * function of the target URL returning the current one (none when it
         * returns nothing); the token must allow it (forward_bearer).
         */
        bearer?: string | ((target: string) => string | null | undefined);
    }

    /** PolySocket.install's options: also the defaults of every socket. */
    export interface PolySocketInstallOptions extends PolySocketOptions {
        /** Replace window.WebSocket even where the browser has one. */
        force?: boolean;
        /**
         * Where the browser has a WebSocket, keep it, but fall back to the
         * bridge when it cannot connect (the default, `true`); `false`
         * leaves window.WebSocket alone.
         */
        fallback?: boolean;
    }

    export type PolySocketBinaryType = "blob" | "arraybuffer" | "binarystring";

    /**
     * A message: `data` is a string (text, or binary as a binary string), an
     * ArrayBuffer or a Blob, as binaryType says (`any`, as in lib.dom's
     * WebSocket, so code written for it compiles unchanged); `binary` tells
     * a binary string from a text.
     */
    export interface PolySocketMessageEvent<T = any> extends MessageEvent<T> {
        readonly binary: boolean;
    }

    export interface PolySocketEventMap {
        open: Event;
        message: PolySocketMessageEvent;
        error: Event;
        close: CloseEvent;
    }

    // require("polysocket").PolySocket and .default are the constructor too
    // (with an export clause, a namespace exports only what says so).
    export { PolySocketClass as PolySocket, PolySocketClass as default };
}

import PolySocketClass = PolySocket;

export = PolySocket;
