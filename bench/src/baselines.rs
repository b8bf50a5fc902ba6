//! What the machine does without bridging: the floor (one plain HTTP request
//! per operation to a minimal actix-web server) and a direct WebSocket.

use crate::run::{Client, Connection, Operation};
use actix_web::{App, HttpResponse, HttpServer, web};
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::pin::Pin;

/// Serves the floor: `GET /echo?d=...` answers `d`; `POST /sink` reads the
/// body and answers 201, as `/s` does; `GET /wait` never answers, as a long
/// poll waits (what actix-web alone holds for a waiting client).
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    HttpServer::new(|| {
        App::new()
            .route(
                "/echo",
                web::get().to(|q: web::Query<Vec<(String, String)>>| async move {
                    q.into_inner().into_iter().find(|(k, _)| k == "d").map(|(_, v)| v).unwrap_or_default()
                }),
            )
            .route("/sink", web::post().to(|_: web::Bytes| async { HttpResponse::Created().finish() }))
            .route("/wait", web::get().to(std::future::pending::<HttpResponse>))
    })
    .bind(listen)?
    .run()
    .await
}

/// A floor client: each operation is one request, `GET /echo` for a round
/// trip or `POST /sink` for a send.
pub struct Floor {
    server: Connection,
    post: bool,
    n: u64,
}

pub async fn floor(server: SocketAddr, post: bool) -> Result<Client, String> {
    Ok(Box::new(Floor { server: Connection::open(server, &server.to_string()).await?, post, n: 0 }))
}

impl Operation for Floor {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.n += 1;
            let message = format!("m{}", self.n);
            if self.post {
                return self
                    .server
                    .post("floor POST", "/sink", "text/plain", message)
                    .await?
                    .expect("floor POST", 201)
                    .map(drop);
            }
            let echoed = self.server.get("floor GET", &format!("/echo?d={message}")).await?.expect("floor GET", 200)?;
            if echoed == message { Ok(()) } else { Err(format!("the floor answered {echoed:?}")) }
        })
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move { self.server.get("floor wait", "/wait").await?.expect("floor wait", 200).map(drop) })
    }
}

pub struct Websocket {
    framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    n: u64,
}

pub async fn websocket(target: String) -> Result<Client, String> {
    let (_, framed) = awc::Client::default().ws(target).connect().await.map_err(|e| format!("websocket: {e}"))?;
    Ok(Box::new(Websocket { framed, n: 0 }))
}

impl Operation for Websocket {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            self.n += 1;
            let text = format!("m{}", self.n);
            self.framed.send(ws::Message::Text(text.clone().into())).await.map_err(|e| e.to_string())?;
            loop {
                match self.framed.next().await {
                    Some(Ok(ws::Frame::Text(data))) if data == text.as_bytes() => return Ok(()),
                    Some(Ok(_)) => {}
                    other => return Err(format!("websocket ended: {other:?}")),
                }
            }
        })
    }
}
