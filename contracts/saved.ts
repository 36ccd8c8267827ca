/**
 * The opt-in "saved" signal of the edge's socket protocol. A client that connects with the
 * query parameter `saved=1` also receives frames of type SAVED_MESSAGE_TYPE: a varuint, the
 * number of update frames (sync step 2 and update) this socket has sent whose fate is settled —
 * committed to PostgreSQL, or needing no commit (already held, or refused). Cumulative, in the
 * order the frames were sent. Stock clients never ask, so they never see the unknown type.
 */
export const SAVED_QUERY_PARAM = 'saved'
export const SAVED_MESSAGE_TYPE = 100
/**
 * A frame of this type alone (no payload) goes first, once, to an opted-in socket whose token is
 * a viewer's: its edits are never applied or published, so the saved frames' count of its
 * settled (refused) update frames never means they are saved.
 */
export const READ_ONLY_MESSAGE_TYPE = 101
