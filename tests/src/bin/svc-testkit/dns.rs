//! `serve --dns`: a tiny authoritative DNS responder for the tests, so
//! that a real resolver client (`dig`) can be pointed at a Service. Every
//! query is answered with one TXT record holding the server's name, over
//! UDP and over TCP (two-byte length prefix), so the answer says which
//! backend served it. Queries are parsed only as far as the question.

use std::{
    io::{self, Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
};

/// The answer to `query`, or `None` if it is not a one-question query.
fn answer(query: &[u8], name: &str) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to the root label, then type and class.
    let mut end = 12;
    loop {
        let len = usize::from(*query.get(end)?);
        end += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        end += len;
    }
    end += 4;
    let question = query.get(12..end)?;
    let rd = query[2] & 0x01;
    let txt = name.as_bytes();
    let txt_len = u8::try_from(txt.len()).ok()?;
    let mut out = Vec::with_capacity(end + 12 + txt.len());
    out.extend_from_slice(&query[0..2]);
    // QR, AA, RD as asked; RA; no error.
    out.extend_from_slice(&[0x84 | rd, 0x80]);
    out.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    // The question's name (pointer to offset 12), TXT, IN, TTL 0.
    out.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&(u16::from(txt_len) + 1).to_be_bytes());
    out.push(txt_len);
    out.extend_from_slice(txt);
    Some(out)
}

/// Answers UDP queries until the socket fails.
pub(crate) fn serve_udp(name: &str, socket: &UdpSocket) {
    let mut buf = [0u8; 1500];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && let Some(reply) = answer(&buf[..n], name)
        {
            // Best effort, like any UDP server.
            drop(socket.send_to(&reply, from));
        }
    }
}

/// Answers TCP queries, one connection at a time.
pub(crate) fn serve_tcp(name: &str, listener: &TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept() else { continue };
        // A client that hangs up is its own business.
        drop(tcp_session(name, stream));
    }
}

fn tcp_session(name: &str, mut stream: TcpStream) -> io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut query)?;
        let Some(reply) = answer(&query, name) else { return Ok(()) };
        let reply_len = u16::try_from(reply.len()).map_err(io::Error::other)?;
        stream.write_all(&reply_len.to_be_bytes())?;
        stream.write_all(&reply)?;
    }
}
