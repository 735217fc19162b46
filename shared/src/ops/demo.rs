//! The demo page's stand-in for a payment provider (only with `demo_mode`):
//! a sender confirms their own packet's payment, and it is paid as the
//! provider's signed callback would pay it, for its exact total.

use super::Service;
use crate::api::PaymentRequest;
use crate::error::Error;
use crate::id::PacketId;
use crate::record::PacketView;
use crate::store::Store;

impl<S: Store> Service<'_, S> {
    /// Pays packet `id` for `user`, its sender, with the payment id
    /// `demo-{id}`: a retry pays nothing twice (the payment is idempotent,
    /// and that id can pay no other packet).
    pub fn demo_pay(&mut self, id: &PacketId, user: &str) -> Result<PacketView, Error> {
        let packet = self.load(id)?;
        if packet.sender != user {
            return Err(Error::InvalidArgument("packet_id: only its sender can pay a packet".into()));
        }
        let request = PaymentRequest {
            packet_id: id.as_str().to_owned(),
            payment_id: format!("demo-{}", id.as_str()),
            amount_fen: packet.total_fen,
        };
        self.pay(id, &request)
    }
}
